-- The billing run's crash scenario: 500 customers with one subscription each on two plans
-- (in arrears with graduated usage; in advance with a standard charge), March 2026's usage.
SET client_min_messages = warning;
CREATE EXTENSION pg_billing;
SELECT billing.create_billable_metric('calls', 'Calls', 'count') IS NOT NULL;
SELECT billing.create_plan('arrears', 'Arrears', 'monthly', 20, 'USD', '[{"billable_metric_code": "calls", "charge_model": "graduated",
  "properties": {"graduated_ranges": [{"from_value": 0, "to_value": 5, "per_unit_amount": "0", "flat_amount": "1"},
                                      {"from_value": 6, "to_value": null, "per_unit_amount": "0.25", "flat_amount": "0"}]}}]') IS NOT NULL;
SELECT billing.create_plan('advance', 'Advance', 'monthly', 15, 'USD',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.1"}}]', pay_in_advance => true) IS NOT NULL;
SELECT count(*) FROM (
  SELECT billing.create_customer('c' || n, 'Customer ' || n, 'USD', 'UTC'),
         billing.create_subscription('s' || n, 'c' || n, CASE WHEN n % 2 = 0 THEN 'arrears' ELSE 'advance' END,
                                     '2026-03-01 00:00+00'::timestamptz + (n % 20) * interval '1 day')
  FROM generate_series(1, 500) n) s;
SELECT count(*) FROM billing.ingest_events((
  SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 's' || n, 'code', 'calls', 'transaction_id', n || '-' || i,
                                      'timestamp', '2026-03-25T12:00:00Z', 'properties', '{}'::jsonb))
  FROM generate_series(1, 500) n, generate_series(1, n % 13) i));
