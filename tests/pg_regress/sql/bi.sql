-- The roles pg_billing creates and the BI views: a BI tool logged in with billing_reader
-- reads the views and nothing else; an ingester with billing_writer ingests and nothing
-- else.
SET client_min_messages = warning;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SELECT external_id FROM billing.create_customer('bi-acme', 'Acme', 'EUR', 'Europe/Paris');
SELECT code FROM billing.create_billable_metric('bi-tokens', 'Tokens', 'sum', 'tokens');
SELECT version FROM billing.create_plan('bi-pro', 'Pro', 'monthly', 49, 'EUR',
  '[{"billable_metric_code": "bi-tokens", "charge_model": "standard", "properties": {"amount": "0.5"}}]');
SELECT external_id, status FROM billing.create_subscription('bi-sub', 'bi-acme', 'bi-pro', '2026-03-01 00:00+01');
SELECT status, count(*) FROM billing.ingest_events('[
  {"external_subscription_id": "bi-sub", "code": "bi-tokens", "transaction_id": "bi-1", "timestamp": "2026-03-02T10:00:00Z", "properties": {"tokens": 10}},
  {"external_subscription_id": "bi-sub", "code": "bi-tokens", "transaction_id": "bi-2", "timestamp": "2026-03-02T23:30:00Z", "properties": {"tokens": 5}},
  {"external_subscription_id": "bi-sub", "code": "bi-tokens", "transaction_id": "bi-3", "timestamp": "2026-03-03T08:00:00Z", "properties": {"tokens": 7}},
  {"external_subscription_id": "bi-sub", "code": "bi-tokens", "transaction_id": "bi-1", "timestamp": "2026-03-02T10:00:00Z", "properties": {"tokens": 10}},
  {"external_subscription_id": "bi-sub", "code": "bi-tokens", "transaction_id": "bi-4", "properties": {"tokens": "ten"}}]')
GROUP BY status ORDER BY status;

-- An admin's login role with billing_admin bills: March in full (49.00) and 22 tokens at
-- 0.5 (11.00) → 60.00.
CREATE ROLE regress_bi_admin LOGIN;
GRANT billing_admin TO regress_bi_admin;
\c - regress_bi_admin
SELECT number LIKE 'INV-%-001' AS numbered, fees_amount, total_amount FROM billing.bill_subscription('bi-sub', '2026-04-01 00:05+02');
\c - postgres

-- The three roles exist, cannot log in, and carry their comments.
SELECT rolname, rolcanlogin, shobj_description(oid, 'pg_authid') IS NOT NULL AS described
FROM pg_roles WHERE rolname IN ('billing_admin', 'billing_writer', 'billing_reader') ORDER BY rolname;

-- A BI tool's login role with billing_reader: the views, with plain types.
CREATE ROLE regress_bi_tool LOGIN;
GRANT billing_reader TO regress_bi_tool;
\c - regress_bi_tool
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SELECT customer_external_id, name, currency, timezone, billing_entity_code FROM billing_bi.customers
WHERE customer_external_id = 'bi-acme';
SELECT subscription_external_id, customer_external_id, plan_code, plan_version, billing_interval, plan_amount, status,
       billing_time, subscription_at
FROM billing_bi.subscriptions WHERE subscription_external_id = 'bi-sub';
-- 23:30 UTC on March 2 is March 3 in Paris: the day rollups are the customer's days.
SELECT day, subscription_external_id, metric_code, aggregation, events, value_sum, value_max
FROM billing_bi.usage_by_day WHERE subscription_external_id = 'bi-sub' ORDER BY day;
SELECT day = (now() AT TIME ZONE 'UTC')::date AS today, metric_code, outcome, sqlstate, reason, events
FROM billing_bi.ingestion_health WHERE metric_code = 'bi-tokens' ORDER BY outcome;
SELECT table_name, column_name, data_type FROM information_schema.columns
WHERE table_schema = 'billing_bi' AND table_name = 'usage_by_day' ORDER BY ordinal_position;
-- Every view of billing_bi, the invoices among them.
SELECT table_name FROM information_schema.tables WHERE table_schema = 'billing_bi' ORDER BY table_name;
SELECT number LIKE 'INV-%-001' AS numbered, customer_external_id, plan_code, status, currency, fees_amount, total_amount
FROM billing_bi.invoices WHERE customer_external_id = 'bi-acme';
SELECT fee_type, description, metric_code, units, amount FROM billing_bi.invoice_lines
WHERE customer_external_id = 'bi-acme' ORDER BY fee_type;
SELECT plan_code, currency, active_subscriptions, mrr FROM billing_bi.mrr WHERE plan_code = 'bi-pro';
-- ... and nothing of schema billing.
SELECT count(*) FROM billing.customers;
CALL billing.run_billing();
SELECT billing.ingest_event('bi-sub', 'bi-tokens', 'bi-5', '2026-03-04 10:00+00', '{"tokens": 1}');
\c - postgres

-- An ingester's login role with billing_writer: every ingestion path, and nothing else.
CREATE ROLE regress_bi_ingester LOGIN;
GRANT billing_writer TO regress_bi_ingester;
\c - regress_bi_ingester
SELECT billing.ingest_event('bi-sub', 'bi-tokens', 'bi-5', '2026-03-04 10:00+00', '{"tokens": 1}');
SELECT status, count(*) FROM billing.ingest_events((
  SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 'bi-sub', 'code', 'bi-tokens', 'transaction_id', 'bi-batch-' || i,
                                      'timestamp', '2026-03-04T12:00:00Z', 'properties', jsonb_build_object('tokens', 1)))
  FROM generate_series(1, 20) i)) GROUP BY status;
COPY billing.event_intake (external_subscription_id, code, transaction_id, "timestamp", properties) FROM stdin;
bi-sub	bi-tokens	bi-copy-1	2026-03-04T13:00:00Z	{"tokens": 2}
\.
INSERT INTO billing.event_staging (external_subscription_id, code, transaction_id, "timestamp", properties)
VALUES ('bi-sub', 'bi-tokens', 'bi-staged-1', '2026-03-04T14:00:00Z', '{"tokens": 3}');
SELECT * FROM billing.ingest_staged();
SELECT billing.create_customer('bi-nope');
SELECT count(*) FROM billing.bill_subscription('bi-sub');
SELECT count(*) FROM billing_bi.customers;
\c - postgres
SELECT count(*) AS stored, sum(value) AS tokens FROM billing.events e
JOIN billing.subscription_directory d ON d.customer_id = e.customer_id AND d.subscription_id = e.subscription_id
WHERE d.external_id = 'bi-sub';
DROP ROLE regress_bi_tool;
DROP ROLE regress_bi_ingester;
DROP ROLE regress_bi_admin;
