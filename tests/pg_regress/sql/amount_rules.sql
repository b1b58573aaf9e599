-- Amounts that must not be wrong and input that must not be silently ignored: per-event
-- prices of recurring metrics, prorated charges, rounding_precision without a function,
-- money given as JSON numbers, and plans in another currency than the customer's. Each
-- expected number is worked out by hand in the comment next to it.
SET client_min_messages = warning;
-- A fresh install, so this file does not depend on the others.
DROP EXTENSION pg_billing CASCADE;
CREATE EXTENSION pg_billing;
SET TIME ZONE 'UTC';
\set SHOW_CONTEXT never
\set VERBOSITY default
SELECT external_id FROM billing.create_customer('acme', 'Acme', 'USD', 'UTC');

-- 1. A recurring sum priced per event (percentage, dynamic) prices every carried-in event,
--    like its units count them.
SELECT count(*) FROM (
  SELECT billing.create_billable_metric('credits', 'Credits', 'sum', 'n', recurring => true)
  UNION ALL SELECT billing.create_billable_metric('spend', 'Spend', 'sum', 'n', recurring => true)
) created;
SELECT version FROM billing.create_plan('per-event', 'Per event', 'monthly', 0, 'USD', '[
  {"billable_metric_code": "credits", "charge_model": "percentage", "properties": {"rate": "1"}},
  {"billable_metric_code": "spend", "charge_model": "dynamic"}]');
SELECT status FROM billing.create_subscription('sub-events', 'acme', 'per-event', '2026-03-01 00:00+00');
SELECT count(*) FILTER (WHERE status = 'accepted') AS accepted FROM billing.ingest_events('[
  {"external_subscription_id": "sub-events", "code": "credits", "transaction_id": "c1", "timestamp": "2026-03-10T10:00:00Z", "properties": {"n": "2.5"}},
  {"external_subscription_id": "sub-events", "code": "credits", "transaction_id": "c2", "timestamp": "2026-06-05T10:00:00Z", "properties": {"n": 12}},
  {"external_subscription_id": "sub-events", "code": "spend", "transaction_id": "s1", "timestamp": "2026-03-10T10:00:00Z", "properties": {"n": 1}, "precise_total_amount_cents": 250},
  {"external_subscription_id": "sub-events", "code": "spend", "transaction_id": "s2", "timestamp": "2026-06-05T10:00:00Z", "properties": {"n": 1}, "precise_total_amount_cents": 1200}]');
-- June, day-aligned (rollups for the units, raw events for the prices):
--   credits: units 2.5 (March) + 12 (June) = 14.5; percentage 1 % of both events = 0.145
--   spend: units 1 + 1 = 2; dynamic (250 + 1200) cents / 100 = 14.5
SELECT billable_metric_code AS code, units, events_count, amount,
       (billable_metric_code, units, amount) IN (('credits', 14.5, 0.145), ('spend', 2, 14.5)) AS ok
FROM billing.usage('sub-events', '2026-06-01 00:00+00', '2026-06-30 23:59:59.999999+00') ORDER BY charge_id;
-- A window ending mid-day reads raw events up to its last instant, for units and prices
-- alike: until 2026-06-05 08:00 only the March events count (June's come at 10:00).
--   credits: units 2.5, amount 2.5 × 1 % = 0.025; spend: units 1, amount 250 / 100 = 2.5
SELECT billable_metric_code AS code, units, events_count, amount,
       (billable_metric_code, units, amount) IN (('credits', 2.5, 0.025), ('spend', 1, 2.5)) AS ok
FROM billing.usage('sub-events', '2026-06-01 00:00+00', '2026-06-05 08:00+00') ORDER BY charge_id;

-- 2. Prorated charges weigh each unit by the days it is active in the period:
--    value × (days from its day to the window's last day) / days of the billing period,
--    a carried-in value for every day of the window, rounded up at 5 decimals.
SELECT count(*) FROM (
  SELECT billing.create_billable_metric('seats', 'Seats', 'sum', 'seats', recurring => true)
  UNION ALL SELECT billing.create_billable_metric('members', 'Members', 'unique_count', 'user_id', recurring => true)
  UNION ALL SELECT billing.create_billable_metric('disk', 'Disk', 'weighted_sum', 'gb', recurring => true)
  UNION ALL SELECT billing.create_billable_metric('tokens', 'Tokens', 'sum', 'tokens')
) created;
SELECT version FROM billing.create_plan('prorated', 'Prorated', 'monthly', 0, 'USD', '[
  {"billable_metric_code": "seats", "charge_model": "standard", "properties": {"amount": "1"}, "prorated": true},
  {"billable_metric_code": "members", "charge_model": "standard", "properties": {"amount": "1"}, "prorated": true},
  {"billable_metric_code": "seats", "charge_model": "graduated", "prorated": true, "properties": {"graduated_ranges": [
     {"from_value": 0, "to_value": 5, "per_unit_amount": "1", "flat_amount": "0"},
     {"from_value": 6, "to_value": null, "per_unit_amount": "2", "flat_amount": "0"}]}},
  {"billable_metric_code": "seats", "charge_model": "standard", "properties": {"amount": "1"}}]');
SELECT c.position, m.code, c.prorated FROM billing.charges c JOIN billing.billable_metrics m ON m.id = c.billable_metric_id
JOIN billing.plan_versions v ON v.id = c.plan_version_id JOIN billing.plans p ON p.id = v.plan_id
WHERE p.code = 'prorated' ORDER BY c.position;
SELECT status FROM billing.create_subscription('sub-pro', 'acme', 'prorated', '2026-04-01 00:00+00');
SELECT count(*) FILTER (WHERE status = 'accepted') AS accepted FROM billing.ingest_events('[
  {"external_subscription_id": "sub-pro", "code": "seats", "transaction_id": "s1", "timestamp": "2026-04-10T10:00:00Z", "properties": {"seats": 5}},
  {"external_subscription_id": "sub-pro", "code": "seats", "transaction_id": "s2", "timestamp": "2026-05-26T09:00:00Z", "properties": {"seats": 12}},
  {"external_subscription_id": "sub-pro", "code": "seats", "transaction_id": "s3", "timestamp": "2026-05-26T09:00:00Z", "properties": {"seats": 12}},
  {"external_subscription_id": "sub-pro", "code": "members", "transaction_id": "m1", "timestamp": "2026-04-05T10:00:00Z", "properties": {"user_id": "m1"}},
  {"external_subscription_id": "sub-pro", "code": "members", "transaction_id": "m3-add", "timestamp": "2026-04-01T10:00:00Z", "properties": {"user_id": "m3"}},
  {"external_subscription_id": "sub-pro", "code": "members", "transaction_id": "m3-remove", "timestamp": "2026-04-20T10:00:00Z", "properties": {"user_id": "m3", "operation_type": "remove"}},
  {"external_subscription_id": "sub-pro", "code": "members", "transaction_id": "m2-add", "timestamp": "2026-05-10T10:00:00Z", "properties": {"user_id": "m2"}},
  {"external_subscription_id": "sub-pro", "code": "members", "transaction_id": "m2-remove", "timestamp": "2026-05-12T10:00:00Z", "properties": {"user_id": "m2", "operation_type": "remove"}},
  {"external_subscription_id": "sub-pro", "code": "members", "transaction_id": "m4", "timestamp": "2026-05-31T23:00:00Z", "properties": {"user_id": "m4"}}]');
CREATE TEMP TABLE expected (window_name text, position integer, units numeric, amount numeric);
INSERT INTO expected VALUES
  -- May (31 days), day-aligned, read from the day rollups:
  -- seats: 5 carried in + 2 × 12 × 6/31 (May 26-31) = 5 + 144/31 = 9.645161… → 9.64517
  ('may', 0, 9.64517, 9.64517),
  -- members: m1 all 31 days, m2 May 10-12 = 3 days (add and remove day included), m3 removed
  -- in April = 0, m4 May 31 = 1 day → 35/31 = 1.129032… → 1.12904
  ('may', 1, 1.12904, 1.12904),
  -- graduated on the prorated units: 5 × 1 + (9.64517 − 6 + 1) × 2 = 5 + 9.29034 = 14.29034
  ('may', 2, 9.64517, 14.29034),
  -- the same metric without proration: 5 + 12 + 12 = 29
  ('may', 3, 29, 29),
  -- April (30 days), the first period: seats 5 from April 10, 21 days → 5 × 21/30 = 3.5;
  -- members m1 April 5-30 = 26 days, m3 April 1-20 = 20 days → 46/30 = 1.5333… → 1.53334
  ('april', 0, 3.5, 3.5), ('april', 1, 1.53334, 1.53334), ('april', 2, 3.5, 3.5), ('april', 3, 5, 5),
  -- May 1-20, a window shorter than the period, still weighed against May's 31 days:
  -- seats 5 × 20/31 = 3.225806… → 3.22581; members m1 20 days + m2 3 days = 23/31 = 0.741935… → 0.74194
  ('may 1-20', 0, 3.22581, 3.22581), ('may 1-20', 1, 0.74194, 0.74194), ('may 1-20', 2, 3.22581, 3.22581), ('may 1-20', 3, 5, 5),
  -- May 1 to May 26 12:00, not day-aligned, read from raw events:
  -- seats 5 × 26/31 + 24 × 1/31 = 154/31 = 4.967741… → 4.96775; members m1 26 + m2 3 = 29/31 = 0.935483… → 0.93549
  ('may 1-26 noon', 0, 4.96775, 4.96775), ('may 1-26 noon', 1, 0.93549, 0.93549), ('may 1-26 noon', 2, 4.96775, 4.96775),
  ('may 1-26 noon', 3, 29, 29);
SELECT w.window_name, c.position, u.billable_metric_code AS code, u.units, u.events_count, u.amount,
       u.units = e.units AND u.amount = e.amount AS ok
FROM (VALUES ('april', '2026-04-01 00:00+00'::timestamptz, '2026-04-30 23:59:59.999999+00'::timestamptz),
             ('may', '2026-05-01 00:00+00', '2026-05-31 23:59:59.999999+00'),
             ('may 1-20', '2026-05-01 00:00+00', '2026-05-20 23:59:59.999999+00'),
             ('may 1-26 noon', '2026-05-01 00:00+00', '2026-05-26 12:00+00')) w(window_name, from_ts, to_ts)
CROSS JOIN LATERAL billing.usage('sub-pro', w.from_ts, w.to_ts) u
JOIN billing.charges c ON c.id = u.charge_id
LEFT JOIN expected e ON e.window_name = w.window_name AND e.position = c.position
ORDER BY w.from_ts, w.to_ts, c.position;

-- Where Lago refuses "prorated", so does pg_billing (22023): a metric that is not recurring,
-- a weighted_sum, a model other than standard, graduated or volume, and anything but
-- standard when paid in advance. Nothing of a refused plan is written.
SELECT billing.create_plan('bad', 'Bad', 'monthly', charges => '[{"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "1"}, "prorated": true}]');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_plan('bad', 'Bad', 'monthly', charges => '[{"billable_metric_code": "disk", "charge_model": "standard", "properties": {"amount": "1"}, "prorated": true}]');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_plan('bad', 'Bad', 'monthly', charges => '[{"billable_metric_code": "seats", "charge_model": "package", "properties": {"amount": "1", "package_size": 10}, "prorated": true}]');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_plan('bad', 'Bad', 'monthly', charges => '[{"billable_metric_code": "seats", "charge_model": "percentage", "properties": {"rate": "1"}, "prorated": true}]');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_plan('bad', 'Bad', 'monthly', charges => '[{"billable_metric_code": "seats", "charge_model": "volume", "pay_in_advance": true, "prorated": true,
  "properties": {"volume_ranges": [{"from_value": 0, "to_value": null, "per_unit_amount": "1", "flat_amount": "0"}]}}]');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS bad_plans FROM billing.plans WHERE code = 'bad';
-- Allowed: standard and volume prorated, and "prorated": false anywhere (a charge paid in
-- advance bills a metric that resets every period: pay_in_advance.sql).
SELECT version FROM billing.create_plan('allowed', 'Allowed', 'monthly', charges => '[
  {"billable_metric_code": "seats", "charge_model": "standard", "properties": {"amount": "1"}, "prorated": true},
  {"billable_metric_code": "members", "charge_model": "volume", "prorated": true,
   "properties": {"volume_ranges": [{"from_value": 0, "to_value": null, "per_unit_amount": "1", "flat_amount": "0"}]}},
  {"billable_metric_code": "tokens", "charge_model": "percentage", "properties": {"rate": "1"}, "prorated": false}]');

-- 3. rounding_precision without rounding_function is Lago's "no rounding": accepted,
--    stored as given, and the units are not rounded (123.456 stays 123.456).
SELECT code, rounding_function, rounding_precision
FROM billing.create_billable_metric('precise', 'Precise', 'sum', 'n', rounding_precision => 2);
SELECT version FROM billing.create_plan('precise', 'Precise', 'monthly', charges => '[
  {"billable_metric_code": "precise", "charge_model": "standard", "properties": {"amount": "2"}}]');
SELECT status FROM billing.create_subscription('sub-precise', 'acme', 'precise', '2026-03-01 00:00+00');
SELECT billing.ingest_event('sub-precise', 'precise', 'p1', '2026-03-02 10:00+00', '{"n": "123.456"}');
-- units 123.456 (unrounded), amount 123.456 × 2 = 246.912
SELECT units, amount, units = 123.456 AND amount = 246.912 AS ok
FROM billing.usage('sub-precise', '2026-03-01 00:00+00', '2026-03-31 23:59:59.999999+00');

-- 4. Money values are decimal strings, as Lago requires: a JSON number for an amount or a
--    rate is refused (22023) with the field, the value and the fix; bounds, sizes and
--    counts stay JSON numbers.
SELECT '{"charge_model":"standard","properties":{"amount":1.5}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"percentage","properties":{"rate":"1","fixed_amount":0.3}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"graduated","properties":{"graduated_ranges":[{"from_value":0,"to_value":null,"per_unit_amount":0.1,"flat_amount":"0"}]}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"graduated_percentage","properties":{"graduated_percentage_ranges":[{"from_value":0,"to_value":null,"rate":"1","flat_amount":2}]}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT '{"charge_model":"percentage","properties":{"rate":"1","per_transaction_max_amount":12}}'::billing.price;
\echo :LAST_ERROR_SQLSTATE
SELECT billing.create_plan('bad', 'Bad', 'monthly', charges => '[{"billable_metric_code": "tokens", "charge_model": "package", "properties": {"amount": 100, "package_size": 10}}]');
\echo :LAST_ERROR_SQLSTATE
-- A filter's price is checked the same way.
SELECT billing.create_plan('bad', 'Bad', 'monthly', charges => '[{"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "1"},
  "filters": [{"values": {}, "properties": {"amount": 2}}]}]');
\echo :LAST_ERROR_SQLSTATE
-- A charge's minimum spend is money too.
SELECT billing.create_plan('bad', 'Bad', 'monthly', charges => '[{"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "1"},
  "min_amount": 10.5}]');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS bad_plans FROM billing.plans WHERE code = 'bad';
-- Strings for money, numbers (or numeric strings) for sizes, counts and bounds:
-- package 121 units, 5 free, size 10 → ceil(116 / 10) = 12 packages × 100 = 1200.
SELECT billing.amount('{"charge_model":"package","properties":{"amount":"100","package_size":10,"free_units":"5"}}', 121) AS amount;

-- 5. A subscription's plan must be priced in the customer's currency (usage is priced in
--    it): a USD plan for a EUR customer is refused (22023) and nothing is written.
SELECT external_id, currency FROM billing.create_customer('paris', 'Paris', 'EUR', 'Europe/Paris');
SELECT billing.create_subscription('sub-paris', 'paris', 'precise', '2026-03-01 00:00+01');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS subscriptions FROM billing.subscriptions WHERE external_id = 'sub-paris';
-- A version of the plan in EUR is accepted; pinning the USD version 1 is refused.
SELECT version, currency FROM billing.create_plan('precise', 'Precise', 'monthly', 0, 'EUR', '[
  {"billable_metric_code": "precise", "charge_model": "standard", "properties": {"amount": "2"}}]');
SELECT billing.create_subscription('sub-paris', 'paris', 'precise', '2026-03-01 00:00+01', plan_version => 1);
\echo :LAST_ERROR_SQLSTATE
SELECT s.external_id, s.status, v.version, v.currency
FROM billing.create_subscription('sub-paris', 'paris', 'precise', '2026-03-01 00:00+01') s
JOIN billing.plan_versions v ON v.id = s.plan_version_id;
