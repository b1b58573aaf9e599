-- Ingestion: exactly once, duplicates and conflicts, every rejection reason, the caller's
-- transaction, batches that keep their good events, and the COPY path.
SET client_min_messages = warning;
-- A fresh install, so this file does not depend on the others.
DROP EXTENSION pg_billing CASCADE;
CREATE EXTENSION pg_billing;
SET TIME ZONE 'UTC';
\set SHOW_CONTEXT never
SELECT external_id FROM billing.create_customer('acme', 'Acme', 'USD', 'UTC');
SELECT code FROM billing.create_billable_metric('tokens', 'Tokens', 'sum', 'tokens');
SELECT code FROM billing.create_billable_metric('calls', 'Calls', 'count');
SELECT code FROM billing.create_billable_metric('users', 'Users', 'unique_count', 'user_id');
SELECT version FROM billing.create_plan('api', 'API', 'monthly', 0, 'USD', '[
  {"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "0.001"}},
  {"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.01"}}]');
SELECT external_id, status FROM billing.create_subscription('sub-1', 'acme', 'api', '2026-01-01 00:00+00');
SELECT external_id, status FROM billing.create_subscription('sub-ended', 'acme', 'api', '2026-01-01 00:00+00');
SELECT status FROM billing.terminate_subscription('sub-ended', '2026-02-01 00:00+00');
SELECT status FROM billing.create_subscription('sub-pending', 'acme', 'api', now() + interval '10 days');

-- One event at a time: accepted, then a replay is a duplicate, a changed payload a conflict.
SELECT billing.ingest_event('sub-1', 'tokens', 'tx-1', '2026-03-01 10:00+00', '{"tokens": 1200}');
SELECT billing.ingest_event('sub-1', 'tokens', 'tx-1', '2026-03-01 10:00+00', '{"tokens": 1200}');
SELECT billing.ingest_event('sub-1', 'tokens', 'tx-1', '2026-03-01 10:00+00', '{"tokens": 9999}');
SELECT billing.ingest_event('sub-1', 'tokens', 'tx-1', '2026-03-02 10:00+00', '{"tokens": 1200}');
-- A replay that leaves out the timestamp matches whatever was stored.
SELECT billing.ingest_event('sub-1', 'tokens', 'tx-1', properties => '{"tokens": 1200}');
-- The first write is kept.
SELECT transaction_id, "timestamp", properties, value FROM billing.events ORDER BY id;

-- Invalid events raise a specific SQLSTATE and write nothing.
SELECT billing.ingest_event('sub-nope', 'tokens', 'tx-2', '2026-03-01', '{"tokens": 1}');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.ingest_event('sub-1', 'nope', 'tx-2', '2026-03-01', '{"tokens": 1}');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.ingest_event('sub-1', 'tokens', 'tx-2', '2026-03-01', '{"tokens": "twelve"}');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.ingest_event('sub-1', 'tokens', 'tx-2', '2026-03-01', '{"tokens": "NaN"}');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.ingest_event('sub-1', 'tokens', 'tx-2', '2026-03-01', '{"tokens": "Infinity"}');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.ingest_event('sub-1', 'tokens', 'tx-2', '2026-03-01', '{"tokens": "1e5"}');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.ingest_event('sub-1', 'tokens', 'tx-2', '2026-03-01', '{"tokens": "123456789012345678901234567890"}');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.ingest_event('sub-1', 'tokens', 'tx-2', '2026-03-01', '{"model": "small"}');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.ingest_event('sub-1', 'tokens', 'tx-2', '2025-12-31 23:59:59+00', '{"tokens": 1}');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.ingest_event('sub-ended', 'tokens', 'tx-2', '2026-02-01 00:00:01+00', '{"tokens": 1}');
\echo :LAST_ERROR_SQLSTATE
-- (terse: these details would show today's date)
\set VERBOSITY terse
SELECT billing.ingest_event('sub-pending', 'tokens', 'tx-2', now(), '{"tokens": 1}');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.ingest_event('sub-1', 'tokens', 'tx-2', now() + interval '2 days', '{"tokens": 1}');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
SELECT billing.ingest_event('sub-1', 'users', 'tx-2', '2026-03-01', '{"user_id": "u1", "operation_type": "delete"}');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.ingest_event('sub-1', 'tokens', '', '2026-03-01', '{"tokens": 1}');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.ingest_event(NULL, 'tokens', 'tx-2', '2026-03-01', '{"tokens": 1}');
\echo :LAST_ERROR_SQLSTATE
-- The future margin is a setting.
SET pg_billing.event_future_margin_seconds = 259200;
SELECT billing.ingest_event('sub-1', 'calls', 'tx-future', now() + interval '2 days');
RESET pg_billing.event_future_margin_seconds;
SELECT count(*) AS stored_events FROM billing.events;

-- Usage commits or rolls back with the caller's transaction.
BEGIN;
SELECT billing.ingest_event('sub-1', 'calls', 'tx-rolled-back', '2026-03-05');
ROLLBACK;
BEGIN;
SELECT billing.ingest_event('sub-1', 'calls', 'tx-committed', '2026-03-05');
COMMIT;
SELECT transaction_id FROM billing.events WHERE transaction_id LIKE 'tx-%ed' ORDER BY transaction_id;
-- The rolled-back key is free again.
SELECT billing.ingest_event('sub-1', 'calls', 'tx-rolled-back', '2026-03-05');

-- A batch: good events are stored even when others are rejected; replays within the
-- batch and against stored events are reported; each rejection keeps its payload.
SELECT * FROM billing.ingest_events('[
  {"external_subscription_id": "sub-1", "code": "tokens", "transaction_id": "b-1", "timestamp": "2026-03-10T08:00:00Z", "properties": {"tokens": 300}},
  {"external_subscription_id": "sub-1", "code": "tokens", "transaction_id": "b-2", "timestamp": 1773129600, "properties": {"tokens": "45.5"}},
  {"external_subscription_id": "sub-1", "code": "tokens", "transaction_id": "b-1", "timestamp": "2026-03-10T08:00:00Z", "properties": {"tokens": 300}},
  {"external_subscription_id": "sub-1", "code": "tokens", "transaction_id": "b-2", "timestamp": 1773129600, "properties": {"tokens": 46}},
  {"external_subscription_id": "sub-1", "code": "tokens", "transaction_id": "tx-1", "timestamp": "2026-03-01T10:00:00Z", "properties": {"tokens": 1200}},
  {"external_subscription_id": "sub-1", "code": "tokens", "transaction_id": "tx-1", "timestamp": "2026-03-01T10:00:00Z", "properties": {"tokens": 1}},
  {"external_subscription_id": "sub-1", "code": "tokens", "transaction_id": "b-3", "timestamp": "2026-03-10T08:00:00Z", "properties": {"tokens": "lots"}},
  {"external_subscription_id": "sub-9", "code": "tokens", "transaction_id": "b-4", "properties": {"tokens": 1}},
  {"external_subscription_id": "sub-1", "code": "tokens", "transaction_id": "b-5", "timestamp": "next tuesday", "properties": {"tokens": 1}},
  {"external_subscription_id": "sub-1", "code": "calls", "transaction_id": "b-6", "timestamp": "2026-03-11T09:30:00+02:00"},
  "not an event",
  {"external_subscription_id": "sub-1", "code": "calls", "transaction_id": "b-7", "colour": "red"},
  {"external_subscription_id": "sub-1", "code": "calls"}
]') ORDER BY index;
SELECT external_subscription_id, transaction_id, code, sqlstate, reason, payload FROM billing.rejected_events ORDER BY id;
SELECT transaction_id, "timestamp", value FROM billing.events WHERE transaction_id LIKE 'b-%' ORDER BY transaction_id;
SELECT billing.ingest_events('{"not": "an array"}');
\echo :LAST_ERROR_SQLSTATE

-- JSON shapes: numbers as identifiers, properties compared as jsonb values (key order and
-- 1 vs 1.0 do not matter), nested and non-ASCII properties, null properties, exponents.
SELECT * FROM billing.ingest_events('[
  {"external_subscription_id": "sub-1", "code": "calls", "transaction_id": 4242, "timestamp": "2026-03-12T10:00:00Z",
   "properties": {"b": 1, "a": {"deep": [1, 2]}, "région": "Île-de-France"}},
  {"external_subscription_id": "sub-1", "code": "calls", "transaction_id": "4242", "timestamp": "2026-03-12T10:00:00Z",
   "properties": {"région": "Île-de-France", "a": {"deep": [1, 2]}, "b": 1.0}},
  {"external_subscription_id": "sub-1", "code": "calls", "transaction_id": "j-null", "timestamp": "2026-03-12T10:00:00Z", "properties": null},
  {"external_subscription_id": "sub-1", "code": "calls", "transaction_id": "j-null", "timestamp": "2026-03-12T10:00:00Z", "properties": {}},
  {"external_subscription_id": "sub-1", "code": "tokens", "transaction_id": "j-exp", "timestamp": "2026-03-12T10:00:00Z", "properties": {"tokens": 1.5e2}},
  {"external_subscription_id": "sub-1", "code": "tokens", "transaction_id": "j-arr", "timestamp": "2026-03-12T10:00:00Z", "properties": [1]},
  {"external_subscription_id": ["sub-1"], "code": "tokens", "transaction_id": "j-bad-id"},
  [1, 2]
]') ORDER BY index;
SELECT transaction_id, properties, value FROM billing.events WHERE transaction_id IN ('4242', 'j-null', 'j-exp') ORDER BY transaction_id;
SELECT reason, payload FROM billing.rejected_events WHERE reason LIKE '%must be a%' ORDER BY id DESC LIMIT 3;
SELECT billing.ingest_events('"just a string"');
\echo :LAST_ERROR_SQLSTATE

-- A batch of 10,000 events in one call: 1 + 2 + ... + 10000 = 50005000 tokens.
SELECT status, count(*) FROM billing.ingest_events((
  SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 'sub-1', 'code', 'tokens', 'transaction_id', 'big-' || i,
                                      'timestamp', '2026-03-13T00:00:00Z', 'properties', jsonb_build_object('tokens', i)))
  FROM generate_series(1, 10000) i)) GROUP BY status;
SELECT count(*), sum(value) FROM billing.events WHERE transaction_id LIKE 'big-%';

-- COPY path: load the staging table, then validate, deduplicate and move in one call.
COPY billing.event_staging (external_subscription_id, code, transaction_id, "timestamp", properties) FROM stdin;
sub-1	tokens	copy-1	2026-03-12T00:00:00Z	{"tokens": 10}
sub-1	tokens	copy-2	2026-03-12T00:00:00Z	{"tokens": 20}
sub-1	tokens	copy-1	2026-03-12T00:00:00Z	{"tokens": 10}
sub-1	tokens	b-1	2026-03-10T08:00:00Z	{"tokens": 301}
sub-1	tokens	copy-3	2026-03-12T00:00:00Z	{"tokens": "x"}
sub-1	calls	copy-4	1773273600	{}
\.
SELECT * FROM billing.ingest_staged(batch_size => 4);
SELECT count(*) AS left_in_staging FROM billing.event_staging;
SELECT transaction_id, value FROM billing.events WHERE transaction_id LIKE 'copy-%' ORDER BY transaction_id;
SELECT transaction_id, reason FROM billing.rejected_events WHERE transaction_id LIKE 'copy-%';
SELECT * FROM billing.ingest_staged(0);
\echo :LAST_ERROR_SQLSTATE

-- COPY into billing.event_intake: validated, deduplicated and stored while the COPY runs,
-- nothing staged. No load yet in this session:
SELECT * FROM billing.last_intake();
COPY billing.event_intake (external_subscription_id, code, transaction_id, "timestamp", properties, precise_total_amount_cents) FROM stdin;
sub-1	tokens	intake-1	2026-03-12T00:00:00Z	{"tokens": 5}	\N
sub-1	tokens	intake-2	2026-03-12T01:00:00Z	{"tokens": 7}	12.5
sub-1	tokens	intake-1	2026-03-12T00:00:00Z	{"tokens": 5}	\N
sub-1	tokens	copy-2	2026-03-12T00:00:00Z	{"tokens": 20}	\N
sub-1	tokens	copy-1	2026-03-12T00:00:00Z	{"tokens": 11}	\N
sub-9	tokens	intake-3	2026-03-12T00:00:00Z	{"tokens": 1}	\N
sub-1	tokens	intake-4	yesterday	{"tokens": 1}	\N
\.
-- 2 accepted (intake-1, intake-2), 2 duplicates (intake-1 again, copy-2 as stored), 1
-- conflict (copy-1 with 11 tokens, 10 stored), 2 rejected.
SELECT * FROM billing.last_intake();
SELECT count(*) AS rows_kept FROM billing.event_intake;
SELECT transaction_id, value, precise_total_amount_cents FROM billing.events
WHERE transaction_id LIKE 'intake-%' OR transaction_id = 'copy-1' ORDER BY transaction_id;
SELECT transaction_id, sqlstate, reason FROM billing.rejected_events WHERE transaction_id LIKE 'intake-%' ORDER BY id;

-- INSERT works as COPY does. A load of more than 10,000 rows is ingested 10,000 at a time,
-- all in the caller's transaction: rolled back, it leaves nothing; committed, all of it.
-- 12,000 events: 1 + 2 + ... + 12000 = 72006000 tokens.
BEGIN;
INSERT INTO billing.event_intake (external_subscription_id, code, transaction_id, "timestamp", properties)
SELECT 'sub-1', 'tokens', 'intake-big-' || i, '2026-03-14T00:00:00Z', jsonb_build_object('tokens', i)
FROM generate_series(1, 12000) i;
SELECT * FROM billing.last_intake();
ROLLBACK;
SELECT count(*) AS after_rollback FROM billing.events WHERE transaction_id LIKE 'intake-big-%';
INSERT INTO billing.event_intake (external_subscription_id, code, transaction_id, "timestamp", properties)
SELECT 'sub-1', 'tokens', 'intake-big-' || i, '2026-03-14T00:00:00Z', jsonb_build_object('tokens', i)
FROM generate_series(1, 12000) i;
SELECT * FROM billing.last_intake();
SELECT count(*), sum(value) FROM billing.events WHERE transaction_id LIKE 'intake-big-%';
-- A load that fails after its first 10,000 rows were ingested stores none of them (the
-- 12,000th row's properties are not JSON), and keeps the last load's counts.
INSERT INTO billing.event_intake (external_subscription_id, code, transaction_id, "timestamp", properties)
SELECT 'sub-1', 'tokens', 'intake-failed-' || i, '2026-03-14T00:00:00Z',
       CASE WHEN i < 12000 THEN '{"tokens": 1}' ELSE '{"tokens": ' END::jsonb
FROM generate_series(1, 12000) i;
SELECT count(*) AS after_failed_load FROM billing.events WHERE transaction_id LIKE 'intake-failed-%';
SELECT * FROM billing.last_intake();
-- The triggers fire whatever the session's replication role (a skipped row trigger would
-- leave rows in the intake table, not ingested), and a load refuses to start without all
-- of them (55000).
SET session_replication_role = replica;
INSERT INTO billing.event_intake (external_subscription_id, code, transaction_id, "timestamp", properties)
VALUES ('sub-1', 'tokens', 'intake-replica', '2026-03-14T00:00:00Z', '{"tokens": 3}');
RESET session_replication_role;
SELECT transaction_id, value FROM billing.events WHERE transaction_id = 'intake-replica';
BEGIN;
DROP TRIGGER intake_end ON billing.event_intake;
INSERT INTO billing.event_intake (external_subscription_id, code, transaction_id, "timestamp", properties)
VALUES ('sub-1', 'tokens', 'intake-no-end', '2026-03-14T00:00:00Z', '{"tokens": 3}');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- The day rollups agree with the stored events.
SELECT r.billable_metric_id, sum(r.events_count) AS rollup_events, sum(r.value_sum) AS rollup_sum,
       (SELECT count(*) FROM billing.events e WHERE e.billable_metric_id = r.billable_metric_id) AS events,
       (SELECT coalesce(sum(e.value), 0) FROM billing.events e WHERE e.billable_metric_id = r.billable_metric_id) AS event_sum
FROM billing.usage_rollups r GROUP BY r.billable_metric_id ORDER BY r.billable_metric_id;

-- Batches of 16 events or more take the bulk path. After a batch whose keys were all new,
-- a session tries its next batch without probing for stored keys, the unique index alone
-- guarding them; the batch after this one meets stored keys there and is stored again with
-- probes, with the outcomes a probed batch has.
SELECT status, count(*) FROM billing.ingest_events((
  SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 'sub-1', 'code', 'tokens', 'transaction_id', 'fresh-' || i,
                                      'timestamp', '2026-03-15T00:00:00Z', 'properties', jsonb_build_object('tokens', 1)))
  FROM generate_series(1, 16) i))
GROUP BY status;
-- Replays of stored keys are compared with the stored payload there too. 14 new events,
-- then 6 replays of stored keys: the same payload (numbers spelt differently, or the
-- timestamp left out) is a duplicate; another value, another timestamp or another amount
-- is a conflict, and the first write is kept.
SELECT ingest.status, count(*), string_agg(ingest.transaction_id, ' ' ORDER BY ingest.index) AS keys
FROM billing.ingest_events((
  SELECT jsonb_agg(e ORDER BY ord) FROM (
    SELECT i AS ord, jsonb_build_object('external_subscription_id', 'sub-1', 'code', 'tokens', 'transaction_id', 'bulk-' || i,
                                        'timestamp', '2026-03-15T00:00:00Z', 'properties', jsonb_build_object('tokens', i)) AS e
    FROM generate_series(1, 14) i
    UNION ALL VALUES
      (15, '{"external_subscription_id": "sub-1", "code": "tokens", "transaction_id": "tx-1", "timestamp": "2026-03-01T10:00:00Z", "properties": {"tokens": 1200.0}}'::jsonb),
      (16, '{"external_subscription_id": "sub-1", "code": "tokens", "transaction_id": "b-1", "properties": {"tokens": 300}}'),
      (17, '{"external_subscription_id": "sub-1", "code": "tokens", "transaction_id": "copy-2", "timestamp": "2026-03-12T00:00:00Z", "properties": {"tokens": 21}}'),
      (18, '{"external_subscription_id": "sub-1", "code": "tokens", "transaction_id": "copy-1", "timestamp": "2026-03-13T00:00:00Z", "properties": {"tokens": 10}}'),
      (19, '{"external_subscription_id": "sub-1", "code": "tokens", "transaction_id": "big-5", "timestamp": "2026-03-13T00:00:00Z", "properties": {"tokens": 5}, "precise_total_amount_cents": "5"}'),
      (20, '{"external_subscription_id": "sub-1", "code": "tokens", "transaction_id": "big-6", "timestamp": "2026-03-13T00:00:00Z", "properties": {"tokens": 6}}')
  ) batch(ord, e))) ingest
GROUP BY ingest.status ORDER BY ingest.status;
SELECT transaction_id, value, "timestamp", precise_total_amount_cents FROM billing.events
WHERE transaction_id IN ('tx-1', 'b-1', 'copy-1', 'copy-2', 'big-5', 'big-6') ORDER BY transaction_id;
-- That batch found stored keys, so the next one probes first: replays of 'fresh-' keys.
SELECT status, count(*) FROM billing.ingest_events((
  SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 'sub-1', 'code', 'tokens', 'transaction_id', 'fresh-' || i,
                                      'timestamp', '2026-03-15T00:00:00Z', 'properties', jsonb_build_object('tokens', 1)))
  FROM generate_series(1, 16) i))
GROUP BY status;
-- Ids follow the order events were sent (events at the same instant count in id order, the
-- later ingested last), whichever order they were stored in: the bulk path stores newest
-- transaction id first, and so does the statement a small batch goes through.
SELECT string_agg(transaction_id, ' ' ORDER BY id) FROM billing.events WHERE transaction_id LIKE 'bulk-%';
SELECT status FROM billing.ingest_events('[
  {"external_subscription_id": "sub-1", "code": "calls", "transaction_id": "order-b", "timestamp": "2026-03-15T00:00:00Z"},
  {"external_subscription_id": "sub-1", "code": "calls", "transaction_id": "order-c", "timestamp": "2026-03-15T00:00:00Z"},
  {"external_subscription_id": "sub-1", "code": "calls", "transaction_id": "order-a", "timestamp": "2026-03-15T00:00:00Z"}]');
SELECT string_agg(transaction_id, ' ' ORDER BY id) FROM billing.events WHERE transaction_id LIKE 'order-%';

-- A role with the grants the README lists ingests through every path: one event, a batch
-- of 20 (the bulk store), COPY into the intake, a reject kept.
DROP ROLE IF EXISTS regress_pg_billing_ingester;
CREATE ROLE regress_pg_billing_ingester;
GRANT USAGE ON SCHEMA billing TO regress_pg_billing_ingester;
GRANT SELECT ON billing.subscription_directory, billing.billable_metrics, billing.charges, billing.charge_filters TO regress_pg_billing_ingester;
GRANT SELECT, INSERT ON billing.events TO regress_pg_billing_ingester;
GRANT USAGE ON SEQUENCE billing.events_id_seq TO regress_pg_billing_ingester;
GRANT SELECT, INSERT, UPDATE ON billing.usage_rollups TO regress_pg_billing_ingester;
GRANT INSERT ON billing.rejected_events TO regress_pg_billing_ingester;
GRANT INSERT ON billing.event_intake TO regress_pg_billing_ingester;
SET ROLE regress_pg_billing_ingester;
SELECT billing.ingest_event('sub-1', 'tokens', 'role-1', '2026-03-14T00:00:00Z', '{"tokens": 1}');
SELECT status, count(*) FROM billing.ingest_events((
  SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 'sub-1', 'code', 'tokens', 'transaction_id', 'role-batch-' || i,
                                      'timestamp', '2026-03-14T00:00:00Z', 'properties', jsonb_build_object('tokens', 1)))
  FROM generate_series(1, 20) i))
GROUP BY status;
COPY billing.event_intake (external_subscription_id, code, transaction_id, "timestamp", properties) FROM stdin;
sub-1	tokens	role-copy	2026-03-14T00:00:00Z	{"tokens": 1}
sub-9	tokens	role-reject	2026-03-14T00:00:00Z	{"tokens": 1}
\.
SELECT * FROM billing.last_intake();
RESET ROLE;
-- Without one of them (UPDATE on the rollups), one event fails as its SQL statement would
-- (42501) and stores nothing.
REVOKE UPDATE ON billing.usage_rollups FROM regress_pg_billing_ingester;
SET ROLE regress_pg_billing_ingester;
\set VERBOSITY sqlstate
SELECT billing.ingest_event('sub-1', 'tokens', 'role-2', '2026-03-14T00:00:00Z', '{"tokens": 1}');
\set VERBOSITY default
RESET ROLE;
SELECT count(*) AS stored, (SELECT count(*) FROM billing.rejected_events WHERE transaction_id = 'role-reject') AS rejected,
       count(*) FILTER (WHERE transaction_id = 'role-2') AS stored_without_the_grant
FROM billing.events WHERE transaction_id LIKE 'role-%';
DROP OWNED BY regress_pg_billing_ingester;
DROP ROLE regress_pg_billing_ingester;

-- The catalog this session has cached follows its own changes, committed or rolled back.
SELECT billing.ingest_event('sub-1', 'tokens', 'cache-1', '2026-03-14T00:00:00Z', '{"tokens": 1}');
BEGIN;
SELECT external_id FROM billing.create_subscription('sub-rolled-back', 'acme', 'api', '2026-01-01 00:00+00');
SELECT billing.ingest_event('sub-rolled-back', 'tokens', 'cache-2', '2026-03-14T00:00:00Z', '{"tokens": 1}');
ROLLBACK;
SELECT status, reason FROM billing.ingest_events('[{"external_subscription_id": "sub-rolled-back", "code": "tokens",
  "transaction_id": "cache-3", "timestamp": "2026-03-14T00:00:00Z", "properties": {"tokens": 1}}]');
BEGIN;
SAVEPOINT before_metric;
SELECT code FROM billing.create_billable_metric('images', 'Images', 'count');
SELECT billing.ingest_event('sub-1', 'images', 'cache-4', '2026-03-14T00:00:00Z');
ROLLBACK TO SAVEPOINT before_metric;
SELECT status, reason FROM billing.ingest_events('[{"external_subscription_id": "sub-1", "code": "images",
  "transaction_id": "cache-5", "timestamp": "2026-03-14T00:00:00Z"}]');
COMMIT;
SELECT status FROM billing.terminate_subscription('sub-1', '2026-03-20 00:00+00');
SELECT status, reason FROM billing.ingest_events('[{"external_subscription_id": "sub-1", "code": "tokens",
  "transaction_id": "cache-6", "timestamp": "2026-03-21T00:00:00Z", "properties": {"tokens": 1}}]');

-- Single events fold into their day's rollup row one at a time: within one statement and
-- across the statements of one transaction each finds, locks and updates the row the one
-- before it wrote; a replay changes nothing; all of it rolls back with the transaction.
SELECT count(*) AS rollup_rows_before FROM billing.usage_rollups WHERE day = '2026-03-18';
BEGIN;
SELECT status, count(*) FROM (
  SELECT billing.ingest_event('sub-1', 'tokens', 'fold-' || i, '2026-03-18T00:00:00Z', jsonb_build_object('tokens', i)) AS status
  FROM generate_series(1, 5) i) s
GROUP BY status;
SELECT billing.ingest_event('sub-1', 'tokens', 'fold-6', '2026-03-18T12:00:00Z', '{"tokens": 100}');
SELECT billing.ingest_event('sub-1', 'tokens', 'fold-3', '2026-03-18T00:00:00Z', '{"tokens": 3}');
SELECT billing.ingest_event('sub-1', 'tokens', 'fold-7', '2026-03-18T06:00:00Z', '{"tokens": 1000}');
-- 7 events, 1 + 2 + 3 + 4 + 5 + 100 + 1000 = 1115 tokens; the latest is fold-6 (12:00).
SELECT sum(events_count) AS events, sum(value_sum) AS tokens, max(value_max) AS largest,
       (array_agg(latest_value ORDER BY latest_at DESC, latest_event_id DESC))[1] AS latest_tokens
FROM billing.usage_rollups WHERE day = '2026-03-18';
ROLLBACK;
SELECT count(*) AS rollup_rows_after_rollback FROM billing.usage_rollups WHERE day = '2026-03-18';
