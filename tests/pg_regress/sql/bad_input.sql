-- Bad input: JSON nested too deep, values too large for an index, and PostgreSQL errors
-- raised inside pg_billing. Each bad event is a reject of its own (kept with its SQLSTATE);
-- the good events beside it go in; no caller sees a Rust backtrace or SQLSTATE XX000.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_billing CASCADE;
CREATE EXTENSION pg_billing;
SET TIME ZONE 'UTC';
\set SHOW_CONTEXT never
SELECT external_id FROM billing.create_customer('acme', 'Acme', 'USD', 'UTC');
SELECT code FROM billing.create_billable_metric('tokens', 'Tokens', 'sum', 'tokens');
SELECT version FROM billing.create_plan('api', 'API', 'monthly', 0, 'USD', '[
  {"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "1"},
   "pricing_group_keys": ["project"]}]');
SELECT external_id, status FROM billing.create_subscription('sub', 'acme', 'api', '2026-01-01 00:00+00');

-- 1. Depth. An element nested 130 levels deep is a reject of its own (it used to raise
-- XX000 from serde_json's recursion limit and lose the batch).
SELECT * FROM billing.ingest_events(('[' || repeat('[', 129) || '1' || repeat(']', 129) || ']')::jsonb);
-- Properties may nest 32 levels (the properties object is the first); deeper is 54000.
-- Deep values in other fields are reported without being read.
SELECT index, transaction_id, status, reason FROM billing.ingest_events(jsonb_build_array(
  jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', 'depth-32',
    'timestamp', '2026-03-01T00:00:00Z',
    'properties', ('{"tokens": 1, "a": ' || repeat('[', 31) || '1' || repeat(']', 31) || '}')::jsonb),
  jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', 'depth-33',
    'timestamp', '2026-03-01T00:00:00Z',
    'properties', ('{"tokens": 1, "a": ' || repeat('[', 32) || '1' || repeat(']', 32) || '}')::jsonb),
  jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', 'depth-1000',
    'timestamp', '2026-03-01T00:00:00Z',
    'properties', ('{"tokens": 1, "a": ' || repeat('{"b": ', 1000) || '1' || repeat('}', 1000) || '}')::jsonb),
  jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens',
    'transaction_id', (repeat('[', 200) || '1' || repeat(']', 200))::jsonb),
  jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', 'props-array',
    'properties', (repeat('[', 200) || '1' || repeat(']', 200))::jsonb),
  jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', 'good-1',
    'timestamp', '2026-03-01T00:00:00Z', 'properties', '{"tokens": 5}'::jsonb)));
SELECT billing.ingest_event('sub', 'tokens', 'depth-200', '2026-03-01',
  ('{"tokens": 1, "a": ' || repeat('[', 200) || '1' || repeat(']', 200) || '}')::jsonb);
\echo :LAST_ERROR_SQLSTATE
-- Through COPY: the reject keeps the too-deep properties as their JSON text (a string), so it
-- is storable at any depth.
CREATE TEMP TABLE deep_rows AS
SELECT 'sub' AS s, 'tokens' AS c, 'copy-deep' AS t, '2026-03-01T00:00:00Z' AS ts,
       ('{"tokens": 1, "a": ' || repeat('[', 3000) || '1' || repeat(']', 3000) || '}')::jsonb AS p
UNION ALL SELECT 'sub', 'tokens', 'copy-good', '2026-03-01T00:00:00Z', '{"tokens": 2}';
INSERT INTO billing.event_intake (external_subscription_id, code, transaction_id, "timestamp", properties)
SELECT s, c, t, ts, p FROM deep_rows ORDER BY t;
SELECT * FROM billing.last_intake();
INSERT INTO billing.event_staging (external_subscription_id, code, transaction_id, "timestamp", properties)
SELECT s, c, 'staged-' || t, ts, p FROM deep_rows ORDER BY t;
SELECT * FROM billing.ingest_staged();
SELECT transaction_id, sqlstate, reason, jsonb_typeof(payload -> 'properties') AS kept_properties,
       octet_length(payload::text) > 6000 AS kept_whole
FROM billing.rejected_events ORDER BY id;

-- 2. A PostgreSQL error raised inside pg_billing reaches the caller as it was raised: its
-- own SQLSTATE, message, detail and hint, and never a Rust backtrace (pgrx appended one to
-- the DETAIL of every such error when the server ran with RUST_BACKTRACE set).
CREATE FUNCTION refuse_rejects() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION USING ERRCODE = '42P17', MESSAGE = 'rejects are refused here',
    DETAIL = 'the offending event is ' || NEW.transaction_id, HINT = 'drop the trigger';
END $$;
CREATE TRIGGER refuse_rejects BEFORE INSERT ON billing.rejected_events
  FOR EACH ROW EXECUTE FUNCTION refuse_rejects();
SELECT * FROM billing.ingest_events('[{"external_subscription_id": "sub", "code": "nope", "transaction_id": "refused"}]');
\echo :LAST_ERROR_SQLSTATE
DROP TRIGGER refuse_rejects ON billing.rejected_events;
-- An error PostgreSQL raises under pg_billing's own statements (writing in a read-only
-- transaction): its SQLSTATE, and no detail added.
BEGIN READ ONLY;
DO $$
DECLARE
  state text;
  detail text;
BEGIN
  PERFORM billing.ingest_event('sub', 'tokens', 'read-only', '2026-03-01', '{"tokens": 1}');
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, detail = PG_EXCEPTION_DETAIL;
  RAISE WARNING 'sqlstate %, detail %', state, coalesce(nullif(detail, ''), '(none)');
END $$;
ROLLBACK;

-- 3. Sizes. Identifiers are at most 255 bytes: a 100 KB transaction id (whose index entry
-- would not fit) is a reject of its own, 54000, and the good event beside it goes in.
SELECT index, left(transaction_id, 12) AS transaction_id, status, reason FROM billing.ingest_events(jsonb_build_array(
  jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', repeat('x', 100000),
    'timestamp', '2026-03-02T00:00:00Z', 'properties', '{"tokens": 1}'::jsonb),
  jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', repeat('y', 255),
    'timestamp', '2026-03-02T00:00:00Z', 'properties', '{"tokens": 1}'::jsonb),
  jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', repeat('é', 128),
    'timestamp', '2026-03-02T00:00:00Z', 'properties', '{"tokens": 1}'::jsonb),
  jsonb_build_object('external_subscription_id', repeat('s', 100000), 'code', 'tokens', 'transaction_id', 'long-sub'),
  jsonb_build_object('external_subscription_id', 'sub', 'code', repeat('c', 256), 'transaction_id', 'long-code'),
  -- A pricing group value is part of the day rollups' key: at most 1 KB of such values.
  jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', 'long-group',
    'timestamp', '2026-03-02T00:00:00Z', 'properties', jsonb_build_object('tokens', 1, 'project', repeat('p', 5000))),
  jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', 'group-1000',
    'timestamp', '2026-03-02T00:00:00Z', 'properties', jsonb_build_object('tokens', 1, 'project', repeat('p', 1000))),
  -- Properties are at most 64 KB as stored.
  jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', 'big-properties',
    'timestamp', '2026-03-02T00:00:00Z', 'properties', jsonb_build_object('tokens', 1, 'blob', repeat('b', 70000))),
  jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', 'good-2',
    'timestamp', '2026-03-02T00:00:00Z', 'properties', '{"tokens": 7}'::jsonb)));
SELECT left(transaction_id, 12) AS transaction_id, sqlstate, reason, octet_length(payload::text) AS payload_bytes
FROM billing.rejected_events WHERE sqlstate = '54000' ORDER BY id;
-- The single-event call raises 54000 with the value cut short in the detail.
SELECT billing.ingest_event('sub', 'tokens', repeat('x', 100000), '2026-03-02', '{"tokens": 1}');
\echo :LAST_ERROR_SQLSTATE
SELECT billing.ingest_event('sub', 'tokens', 'big-number', '2026-03-02', jsonb_build_object('tokens', repeat('9', 5000)));
\echo :LAST_ERROR_SQLSTATE
-- Through COPY: the oversized row is a reject, the good one goes in.
INSERT INTO billing.event_intake (external_subscription_id, code, transaction_id, "timestamp", properties)
VALUES ('sub', 'tokens', repeat('z', 100000), '2026-03-02T00:00:00Z', '{"tokens": 1}'),
       ('sub', 'tokens', 'copy-good-2', '2026-03-02T00:00:00Z', '{"tokens": 3}');
SELECT * FROM billing.last_intake();

-- What was stored, and the day rollups equal to it.
SELECT left(transaction_id, 12) AS transaction_id, local_day, value, left(dims::text, 30) AS dims FROM billing.events ORDER BY id;
SELECT day, dims ->> 'project' IS NOT NULL AS grouped, sum(events_count) AS events, sum(value_sum) AS value
FROM billing.usage_rollups GROUP BY 1, 2 ORDER BY 1, 2;
SELECT count(*) AS rejects, count(*) FILTER (WHERE sqlstate = 'XX000') AS internal_errors FROM billing.rejected_events;
