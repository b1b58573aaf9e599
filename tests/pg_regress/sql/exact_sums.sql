-- Every accepted value keeps usage exact and readable: day rollups equal the exact sum of
-- their events, whichever path stored them, and values beyond what a period's sum keeps
-- exact are rejected one by one (22003), never costing the good events beside them.
SET client_min_messages = warning;
SET TIME ZONE 'UTC';
SELECT currency FROM billing.create_customer('exact-co', 'Exact Co', 'USD', 'UTC');
SELECT billing.create_billable_metric('exact_tokens', 'Tokens', 'sum', 'tokens') IS NOT NULL AS metric;
SELECT billing.create_plan('exact-api', 'API', 'monthly', 0, 'USD',
    '[{"billable_metric_code": "exact_tokens", "charge_model": "standard", "properties": {"amount": "1"}}]') IS NOT NULL AS plan;
SELECT status FROM billing.create_subscription('exact-sub', 'exact-co', 'exact-api', '2026-01-01 00:00+00');

CREATE FUNCTION exact_event(tx text, ts text, tokens text) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('external_subscription_id', 'exact-sub', 'code', 'exact_tokens', 'transaction_id', tx,
                              'timestamp', ts, 'properties', jsonb_build_object('tokens', tokens))
$$;
-- Rollups against events, per day: both sums must be equal.
CREATE VIEW exact_day_check AS
SELECT e.local_day, e.n AS events, e.s AS event_sum, r.n AS rollup_events, r.s AS rollup_sum, e.s = r.s AS equal
FROM (SELECT local_day, count(*) AS n, sum(value) AS s FROM billing.events
      WHERE subscription_id = (SELECT id FROM billing.subscriptions WHERE external_id = 'exact-sub') GROUP BY 1) e
FULL JOIN (SELECT day, sum(events_count) AS n, sum(value_sum) AS s FROM billing.usage_rollups
           WHERE subscription_id = (SELECT id FROM billing.subscriptions WHERE external_id = 'exact-sub') GROUP BY 1) r
  ON r.day = e.local_day;

-- 1. Mixed scales on one day, in a batch of 20 (the direct path) and one by one (the
-- statements): 1000000 + 0.123456789 + eighteen times 0.000000001 = 1000000.123456807.
SELECT status, count(*) FROM billing.ingest_events((
  SELECT jsonb_agg(exact_event('mixed-' || n, '2026-03-01T10:00:00Z',
                         CASE n WHEN 1 THEN '1000000' WHEN 2 THEN '0.123456789' ELSE '0.000000001' END))
  FROM generate_series(1, 20) n)) GROUP BY status;
SELECT billing.ingest_event('exact-sub', 'exact_tokens', 'single-1', '2026-03-02 10:00+00', '{"tokens": "1000000"}');
SELECT billing.ingest_event('exact-sub', 'exact_tokens', 'single-2', '2026-03-02 11:00+00', '{"tokens": "0.123456789"}');

-- 2. Eight values at the top of the accepted range on one day, in one batch and as single
-- events: 8 x 999999999999999.999999999 = 7999999999999999.999999992 each day.
SELECT status, count(*) FROM billing.ingest_events((
  SELECT jsonb_agg(exact_event('top-' || n, '2026-03-03T10:00:00Z', '999999999999999.999999999')) FROM generate_series(1, 8) n))
GROUP BY status;
SELECT count(*) FILTER (WHERE billing.ingest_event('exact-sub', 'exact_tokens', 'top-single-' || n, '2026-03-04 10:00+00',
                                                   '{"tokens": "999999999999999.999999999"}') = 'accepted') AS accepted
FROM generate_series(1, 8) n;
SELECT * FROM exact_day_check ORDER BY local_day;

-- 3. Values beyond the range are rejects of their own, with 22003 and a HINT; the good
-- event beside them is stored.
SELECT index, status, reason FROM billing.ingest_events(jsonb_build_array(
  exact_event('huge', '2026-03-05T10:00:00Z', '9999999999999999999999999999'),
  exact_event('fine', '2026-03-05T10:00:00Z', '2'),
  exact_event('many-decimals', '2026-03-05T10:00:00Z', '0.1234567890123456789012345678'),
  exact_event('sixteen-digits', '2026-03-05T10:00:00Z', '1000000000000000'))) ORDER BY index;
SELECT transaction_id, sqlstate FROM billing.rejected_events WHERE external_subscription_id = 'exact-sub' ORDER BY id;
\set VERBOSITY default
SELECT billing.ingest_event('exact-sub', 'exact_tokens', 'huge-single', '2026-03-05 10:00+00', '{"tokens": "-1000000000000000"}');
\set VERBOSITY terse

-- 4. Usage over the month reads every accepted value: units = 1000000.123456807 +
-- 1000000.123456789 + 2 x 7999999999999999.999999992 + 2 = 16000000002000002.24691358,
-- 39 events, priced at 1 per unit.
SELECT units, events_count, amount FROM billing.usage('exact-sub', '2026-03-01', '2026-03-31 23:59:59.999999');

-- 5. A stored amount that no validated event can carry (changed by hand beyond the exact
-- range, or to NaN) makes a replay a conflict, on every path: the single event, a batch
-- of 20 (the direct path when it is on), and the statement for small batches.
SELECT status, count(*) FROM billing.ingest_events((
  SELECT jsonb_agg(exact_event('cents-' || n, '2026-03-06T10:00:00Z', '1') || '{"precise_total_amount_cents": "5"}')
  FROM generate_series(1, 20) n)) GROUP BY status;
UPDATE billing.events SET precise_total_amount_cents = 1e40 WHERE transaction_id IN ('cents-1', 'cents-3');
UPDATE billing.events SET precise_total_amount_cents = 'NaN' WHERE transaction_id IN ('cents-2', 'cents-4');
SELECT billing.ingest_event('exact-sub', 'exact_tokens', 'cents-1', '2026-03-06 10:00+00', '{"tokens": "1"}', 5);
SELECT billing.ingest_event('exact-sub', 'exact_tokens', 'cents-2', '2026-03-06 10:00+00', '{"tokens": "1"}', 5);
SELECT status, count(*) FROM billing.ingest_events((
  SELECT jsonb_agg(exact_event('cents-' || n, '2026-03-06T10:00:00Z', '1') || '{"precise_total_amount_cents": "5"}')
  FROM generate_series(1, 20) n)) GROUP BY status ORDER BY status;
SELECT index, status FROM billing.ingest_events((
  SELECT jsonb_agg(exact_event('cents-' || n, '2026-03-06T10:00:00Z', '1') || '{"precise_total_amount_cents": "5"}')
  FROM generate_series(3, 5) n)) ORDER BY index;

-- 6. Any timestamptz a caller passes is described in a clean error, never a crash: the
-- infinities by name, a year past 9999 in full.
\set VERBOSITY default
SELECT billing.ingest_event('exact-sub', 'exact_tokens', 'inf', 'infinity', '{"tokens": "1"}');
SELECT billing.ingest_event('exact-sub', 'exact_tokens', 'far', '200000-01-01 00:00+00', '{"tokens": "1"}');
SELECT billing.ingest_event('exact-sub', 'exact_tokens', 'past', '-infinity', '{"tokens": "1"}');
\set VERBOSITY terse
