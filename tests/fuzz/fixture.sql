-- Fixture of the fuzz tier: two customers (UTC and Paris, so local days differ), a sum
-- metric split by a pricing group key ('project', so events carry dims), a count metric and
-- a max metric, and two subscriptions active since 2026-01-01.
SET client_min_messages = warning;
CREATE EXTENSION pg_billing;
SELECT billing.create_customer('acme', 'Acme', 'USD', 'UTC');
SELECT billing.create_customer('paris', 'Paris', 'EUR', 'Europe/Paris');
SELECT billing.create_billable_metric('tokens', 'Tokens', 'sum', 'tokens');
SELECT billing.create_billable_metric('calls', 'Calls', 'count');
SELECT billing.create_billable_metric('peak', 'Peak', 'max', 'level');
SELECT billing.create_plan(code, 'API', 'monthly', 0, currency, '[
  {"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "1"},
   "pricing_group_keys": ["project"]},
  {"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.01"}},
  {"billable_metric_code": "peak", "charge_model": "standard", "properties": {"amount": "2"}}]')
FROM (VALUES ('api', 'USD'), ('api-eur', 'EUR')) plans(code, currency);
SELECT billing.create_subscription('sub', 'acme', 'api', '2026-01-01 00:00+00');
SELECT billing.create_subscription('sub-paris', 'paris', 'api-eur', '2026-01-01 00:00+00');
