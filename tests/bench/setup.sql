-- Benchmark fixture: 200 customers, 1,000 subscriptions, a sum metric billed in arrears and a
-- count metric billed in advance, and the raw
-- table that plain PostgreSQL fills with the same rows and the same unique key (every
-- measure writes the same rows to both sides, so each side's table holds what the other's
-- does when a measure starts).
SET client_min_messages = warning;
CREATE EXTENSION pg_billing;
SELECT count(billing.create_customer('cust-' || c, 'Customer ' || c, 'USD', 'UTC')) FROM generate_series(1, 200) c;
SELECT billing.create_billable_metric('tokens', 'Tokens', 'sum', 'tokens') IS NOT NULL;
-- Requests are billed as they are ingested (a charge paid in advance, graduated).
SELECT billing.create_billable_metric('requests', 'Requests', 'count') IS NOT NULL;
SELECT billing.create_plan('api', 'API', 'monthly', 0, 'USD',
    '[{"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "0.002"}},
      {"billable_metric_code": "requests", "charge_model": "graduated", "pay_in_advance": true, "properties": {"graduated_ranges": [
         {"from_value": 0, "to_value": 1000, "per_unit_amount": "0.01", "flat_amount": "1"},
         {"from_value": 1001, "to_value": null, "per_unit_amount": "0.005", "flat_amount": "0"}]}}]') IS NOT NULL;
SELECT count(billing.create_subscription('sub-' || s, 'cust-' || (s % 200 + 1), 'api', date_trunc('month', now()) - interval '1 month'))
FROM generate_series(1, 1000) s;

CREATE TABLE raw_events (
    external_subscription_id text NOT NULL, code text NOT NULL, transaction_id text NOT NULL,
    "timestamp" timestamptz NOT NULL, properties jsonb NOT NULL,
    UNIQUE (external_subscription_id, transaction_id)
);

-- Batches of 1,000 events: fresh keys plus 10 % replays of the previous batch's keys. A
-- batch carries the events of 50 subscriptions (20 each), as an ingestion worker that
-- buffers per tenant would send them; successive batches move across all 1,000.
CREATE TABLE bench_batches (id int PRIMARY KEY, events jsonb NOT NULL);
INSERT INTO bench_batches
SELECT b, jsonb_agg(jsonb_build_object(
         'external_subscription_id', 'sub-' || ((k / 20) % 1000 + 1), 'code', 'tokens', 'transaction_id', 'tx-' || k,
         'timestamp', to_char(date_trunc('day', now()) + (k % 3600) * interval '1 second', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
         'properties', jsonb_build_object('tokens', k % 5000, 'model', 'small')))
FROM generate_series(1, :batches) b,
     LATERAL (SELECT CASE WHEN i <= 900 OR b = 1 THEN b * 1000 + i ELSE (b - 1) * 1000 + (i - 900) END AS k
              FROM generate_series(1, 1000) i) keys
GROUP BY b;
CREATE SEQUENCE bench_batch_seq;
CREATE SEQUENCE raw_batch_seq;
