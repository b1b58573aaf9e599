-- Usage in a window for every aggregation, against units worked out by hand from
-- the pricing rules, plus rounding, filters, pricing groups and per-event prices.
SET client_min_messages = warning;
-- A fresh install, so this file does not depend on the others.
DROP EXTENSION pg_billing CASCADE;
CREATE EXTENSION pg_billing;
SET TIME ZONE 'UTC';
\set SHOW_CONTEXT never
SELECT external_id FROM billing.create_customer('acme', 'Acme', 'USD', 'UTC');
SELECT count(*) FROM (
  SELECT billing.create_billable_metric('calls', 'Calls', 'count')
  UNION ALL SELECT billing.create_billable_metric('tokens', 'Tokens', 'sum', 'tokens')
  UNION ALL SELECT billing.create_billable_metric('peak', 'Peak memory', 'max', 'mem')
  UNION ALL SELECT billing.create_billable_metric('level', 'Level', 'latest', 'level')
  UNION ALL SELECT billing.create_billable_metric('drop', 'Dropping level', 'latest', 'level')
  UNION ALL SELECT billing.create_billable_metric('users', 'Users', 'unique_count', 'user_id')
  UNION ALL SELECT billing.create_billable_metric('storage', 'Storage', 'weighted_sum', 'gb')
  UNION ALL SELECT billing.create_billable_metric('seats', 'Seats', 'sum', 'seats', recurring => true)
  UNION ALL SELECT billing.create_billable_metric('disk', 'Disk', 'weighted_sum', 'gb', recurring => true)
  UNION ALL SELECT billing.create_billable_metric('members', 'Members', 'unique_count', 'user_id', recurring => true)
  UNION ALL SELECT billing.create_billable_metric('ceil_n', 'Ceil', 'sum', 'n', rounding_function => 'ceil', rounding_precision => -2)
  UNION ALL SELECT billing.create_billable_metric('round_n', 'Round', 'sum', 'n', rounding_function => 'round', rounding_precision => -2)
  UNION ALL SELECT billing.create_billable_metric('floor_n', 'Floor', 'sum', 'n', rounding_function => 'floor', rounding_precision => 1)
  UNION ALL SELECT billing.create_billable_metric('requests', 'Requests', 'count', filters => '{"region": ["us", "eu", "apac"], "tier": ["gold"]}')
  UNION ALL SELECT billing.create_billable_metric('payments', 'Payments', 'sum', 'amount')
  UNION ALL SELECT billing.create_billable_metric('spend', 'Model spend', 'sum', 'amount')
) created;
SELECT version FROM billing.create_plan('all', 'All', 'monthly', 0, 'USD', (
  SELECT jsonb_agg(jsonb_build_object('billable_metric_code', code, 'charge_model', 'standard', 'properties', '{"amount": "1"}'::jsonb))
  FROM unnest(ARRAY['calls', 'tokens', 'peak', 'level', 'drop', 'users', 'storage', 'seats', 'disk', 'members', 'ceil_n', 'round_n', 'floor_n']) code
) || '[
  {"billable_metric_code": "requests", "charge_model": "standard", "properties": {"amount": "0.01"}, "pricing_group_keys": ["app"],
   "filters": [{"values": {"region": ["us"]}, "properties": {"amount": "0.02"}},
               {"values": {"region": ["eu"]}, "properties": {"amount": "0.03"}},
               {"values": {"region": ["eu"], "tier": ["gold"]}, "properties": {"amount": "0.05"}}]},
  {"billable_metric_code": "payments", "charge_model": "percentage", "properties": {"rate": "2", "fixed_amount": "0.5", "free_units_per_events": 1}},
  {"billable_metric_code": "spend", "charge_model": "dynamic"}]'::jsonb);
SELECT status FROM billing.create_subscription('sub', 'acme', 'all', '2026-01-01 00:00+00');

SELECT count(*) FILTER (WHERE status = 'accepted') AS accepted, count(*) AS sent FROM billing.ingest_events((
  SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 'sub', 'code', code, 'transaction_id', code || '-' || n,
                                      'timestamp', ts, 'properties', props::jsonb) ORDER BY n)
  FROM (VALUES
    -- count: three in March; February and April are outside the window
    (1, 'calls', '2026-02-28T23:59:59Z', '{}'), (2, 'calls', '2026-03-01T00:00:00Z', '{}'),
    (3, 'calls', '2026-03-15T12:00:00Z', '{}'), (4, 'calls', '2026-03-31T23:59:59.999999Z', '{}'),
    (5, 'calls', '2026-04-01T00:00:00Z', '{}'),
    -- sum with a negative value: 100 + 250.5 − 50 = 300.5
    (6, 'tokens', '2026-03-02T00:00:00Z', '{"tokens": 100}'), (7, 'tokens', '2026-03-03T00:00:00Z', '{"tokens": "250.5"}'),
    (8, 'tokens', '2026-03-04T00:00:00Z', '{"tokens": -50}'),
    -- max: 12
    (9, 'peak', '2026-03-02T00:00:00Z', '{"mem": 5}'), (10, 'peak', '2026-03-03T00:00:00Z', '{"mem": 12}'),
    (11, 'peak', '2026-03-04T00:00:00Z', '{"mem": 7}'),
    -- latest: two events at the same last instant, the later ingested (6) wins
    (12, 'level', '2026-03-10T00:00:00Z', '{"level": 4}'), (13, 'level', '2026-03-20T00:00:00Z', '{"level": 9}'),
    (14, 'level', '2026-03-20T00:00:00Z', '{"level": 6}'),
    -- latest negative counts as 0
    (15, 'drop', '2026-03-10T00:00:00Z', '{"level": 4}'), (16, 'drop', '2026-03-11T00:00:00Z', '{"level": -3}'),
    -- unique_count: u1 +1 (its second add changes nothing), u3's remove without an add is
    -- ignored, u2 +1 −1 +1 → 2
    (17, 'users', '2026-03-02T00:00:00Z', '{"user_id": "u1"}'), (18, 'users', '2026-03-03T00:00:00Z', '{"user_id": "u2"}'),
    (19, 'users', '2026-03-04T00:00:00Z', '{"user_id": "u1", "operation_type": "add"}'),
    (20, 'users', '2026-03-05T00:00:00Z', '{"user_id": "u3", "operation_type": "remove"}'),
    (21, 'users', '2026-03-06T00:00:00Z', '{"user_id": "u2", "operation_type": "remove"}'),
    (22, 'users', '2026-03-07T00:00:00Z', '{"user_id": "u2", "operation_type": "add"}'),
    -- weighted_sum: 3100 for the first 10 of 31 days → 1000
    (23, 'storage', '2026-03-01T00:00:00Z', '{"gb": 3100}'), (24, 'storage', '2026-03-11T00:00:00Z', '{"gb": -3100}'),
    -- recurring sum: 5 carried in from February + 2 × 12 = 29
    (25, 'seats', '2026-02-10T00:00:00Z', '{"seats": 5}'), (26, 'seats', '2026-03-26T00:00:00Z', '{"seats": 12}'),
    (27, 'seats', '2026-03-26T00:00:00Z', '{"seats": 12}'),
    -- recurring weighted_sum: level 100 carried in, +310 for the last 16 days → 100 + 160 = 260
    (28, 'disk', '2026-02-15T00:00:00Z', '{"gb": 100}'), (29, 'disk', '2026-03-16T00:00:00Z', '{"gb": 310}'),
    -- recurring unique_count: m1 added in February, m2 added and removed in March → 1
    (30, 'members', '2026-02-01T00:00:00Z', '{"user_id": "m1"}'), (31, 'members', '2026-03-02T00:00:00Z', '{"user_id": "m2"}'),
    (32, 'members', '2026-03-09T00:00:00Z', '{"user_id": "m2", "operation_type": "remove"}'),
    -- rounding 123.456: ceil at −2 → 200, round at −2 → 100, floor at 1 → 123.4
    (33, 'ceil_n', '2026-03-02T00:00:00Z', '{"n": "123.456"}'), (34, 'round_n', '2026-03-02T00:00:00Z', '{"n": "123.456"}'),
    (35, 'floor_n', '2026-03-02T00:00:00Z', '{"n": "123.456"}'),
    -- filters (most keys wins) and pricing groups by app
    (36, 'requests', '2026-03-02T00:00:00Z', '{"region": "us", "app": "a"}'),
    (37, 'requests', '2026-03-02T00:00:00Z', '{"region": "us", "app": "a"}'),
    (38, 'requests', '2026-03-02T00:00:00Z', '{"region": "us", "app": "b"}'),
    (39, 'requests', '2026-03-02T00:00:00Z', '{"region": "eu", "tier": "gold", "app": "a"}'),
    (40, 'requests', '2026-03-02T00:00:00Z', '{"region": "eu", "app": "b"}'),
    (41, 'requests', '2026-03-02T00:00:00Z', '{"region": "apac", "app": "a"}'),
    (42, 'requests', '2026-03-02T00:00:00Z', '{"model": "x"}'),
    -- percentage, 2 % + 0.5 per event, first event's units free: 250 × 2 % + 2 × 0.5 = 6
    (43, 'payments', '2026-03-01T00:00:00Z', '{"amount": 100}'), (44, 'payments', '2026-03-02T00:00:00Z', '{"amount": 200}'),
    (45, 'payments', '2026-03-03T00:00:00Z', '{"amount": 50}')
  ) v(n, code, ts, props)));
SELECT status FROM billing.ingest_event('sub', 'spend', 'spend-1', '2026-03-05', '{"amount": 1}', 1234) status;
SELECT status FROM billing.ingest_event('sub', 'spend', 'spend-2', '2026-03-06', '{"amount": 1}', 66) status;

-- March, a day-aligned window (served by the day rollups where the aggregation allows).
CREATE TEMP TABLE expected (code text, filter jsonb, grouped_by jsonb, units numeric, amount numeric);
INSERT INTO expected VALUES
  ('calls', NULL, '{}', 3, 3), ('tokens', NULL, '{}', 300.5, 300.5), ('peak', NULL, '{}', 12, 12),
  ('level', NULL, '{}', 6, 6), ('drop', NULL, '{}', 0, 0), ('users', NULL, '{}', 2, 2),
  ('storage', NULL, '{}', 1000, 1000), ('seats', NULL, '{}', 29, 29), ('disk', NULL, '{}', 260, 260),
  ('members', NULL, '{}', 1, 1), ('ceil_n', NULL, '{}', 200, 200), ('round_n', NULL, '{}', 100, 100),
  ('floor_n', NULL, '{}', 123.4, 123.4),
  ('requests', NULL, '{"app": "a"}', 1, 0.01), ('requests', NULL, '{"app": null}', 1, 0.01),
  ('requests', '{"region": ["us"]}', '{"app": "a"}', 2, 0.04), ('requests', '{"region": ["us"]}', '{"app": "b"}', 1, 0.02),
  ('requests', '{"region": ["eu"]}', '{"app": "b"}', 1, 0.03),
  ('requests', '{"region": ["eu"], "tier": ["gold"]}', '{"app": "a"}', 1, 0.05),
  ('payments', NULL, '{}', 350, 6), ('spend', NULL, '{}', 2, 13);
SELECT u.billable_metric_code AS code, u.filter_values AS filter, u.grouped_by, u.units, u.events_count, u.amount,
       e.units = u.units AND e.amount = u.amount AS ok
FROM billing.usage('sub', '2026-03-01 00:00+00', '2026-03-31 23:59:59.999999+00') u
LEFT JOIN expected e ON e.code = u.billable_metric_code AND e.filter IS NOT DISTINCT FROM u.filter_values AND e.grouped_by = u.grouped_by
ORDER BY u.charge_id, u.filter_id NULLS FIRST, u.grouped_by::text;

-- A window that is not day-aligned reads raw events and agrees with them.
SELECT u.billable_metric_code AS code, u.units, u.events_count
FROM billing.usage('sub', '2026-03-01 12:00+00', '2026-03-15 12:00+00') u
WHERE u.billable_metric_code IN ('calls', 'tokens', 'peak', 'level') ORDER BY u.charge_id;

-- Unknown subscription and an inverted window.
SELECT * FROM billing.usage('nope', '2026-03-01', '2026-03-02');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM billing.usage('sub', '2026-03-02', '2026-03-01');
\echo :LAST_ERROR_SQLSTATE

-- Current usage is the open period's usage (the subscription is active since January).
SELECT (SELECT count(*) FROM billing.current_usage('sub')) = (SELECT count(*) FROM billing.charges c
          JOIN billing.subscriptions s ON s.plan_version_id = c.plan_version_id WHERE s.external_id = 'sub') + 3 AS one_row_per_bucket,
       (SELECT min(from_datetime) FROM billing.current_usage('sub')) = date_trunc('month', now()) AS starts_this_month;

-- Raw reads find events through their stored local day, bounded by the window's UTC days
-- two days out: in the zones farthest ahead of and behind UTC (+14, -11), events at a
-- window's first and last microsecond count, those just outside do not. Each customer
-- sends unique users (u-in-1 and u-in-2 inside, u-out-1 and u-out-2 a microsecond out)
-- and 10 tokens per event; the window is not day-aligned, so tokens are read raw too.
SELECT external_id FROM billing.create_customer('kiri', 'Kiritimati', 'USD', 'Pacific/Kiritimati');
SELECT external_id FROM billing.create_customer('pago', 'Pago Pago', 'USD', 'Pacific/Pago_Pago');
SELECT status FROM billing.create_subscription('sub-kiri', 'kiri', 'all', '2026-01-01 00:00+14');
SELECT status FROM billing.create_subscription('sub-pago', 'pago', 'all', '2026-01-01 00:00-11');
SELECT s.sub, count(*) FILTER (WHERE i.status = 'accepted') AS accepted
FROM (VALUES ('sub-kiri', '+14'), ('sub-pago', '-11')) s(sub, zone),
     LATERAL billing.ingest_events((
       SELECT jsonb_agg(jsonb_build_object('external_subscription_id', s.sub, 'code', code, 'transaction_id', code || '-' || e.user_id,
                                           'timestamp', (e.at || s.zone)::timestamptz, 'properties',
                                           jsonb_build_object('user_id', e.user_id, 'tokens', 10)))
       FROM (VALUES ('u-out-1', '2026-03-01 11:59:59.999999'), ('u-in-1', '2026-03-01 12:00:00'),
                    ('u-in-2', '2026-03-31 11:59:59.999999'), ('u-out-2', '2026-03-31 12:00:00')) e(user_id, at),
            unnest(ARRAY['users', 'tokens']) code)) i
GROUP BY s.sub ORDER BY s.sub;
SELECT s.sub, u.billable_metric_code AS code, u.units, u.events_count
FROM (VALUES ('sub-kiri', '+14'), ('sub-pago', '-11')) s(sub, zone),
     LATERAL billing.usage(s.sub, ('2026-03-01 12:00' || s.zone)::timestamptz, ('2026-03-31 11:59:59.999999' || s.zone)::timestamptz) u
WHERE u.billable_metric_code IN ('users', 'tokens') ORDER BY s.sub, u.charge_id;

-- Single events fold into the day rollup of their dimension set (the properties filters and
-- pricing group keys look at): two us/a requests share one row, eu/b has its own, and
-- the window's usage splits them by filter and group as it does for batches.
SELECT billing.ingest_event('sub-kiri', 'requests', 'dims-' || n, '2026-04-10T12:00:00Z', p::jsonb)
FROM (VALUES (1, '{"region": "us", "app": "a", "ignored": 1}'), (2, '{"app": "a", "region": "us"}'),
             (3, '{"region": "eu", "app": "b"}')) v(n, p);
SELECT r.dims, r.events_count
FROM billing.usage_rollups r JOIN billing.subscriptions s ON s.id = r.subscription_id
WHERE s.external_id = 'sub-kiri' AND r.day = '2026-04-11' ORDER BY r.dims::text;
SELECT u.filter_values, u.grouped_by, u.units, u.amount
FROM billing.usage('sub-kiri', '2026-04-11 00:00+14', '2026-04-11 23:59:59.999999+14') u
WHERE u.billable_metric_code = 'requests' AND u.units > 0 ORDER BY u.filter_values::text, u.grouped_by::text;
