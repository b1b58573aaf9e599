#!/usr/bin/env bash
# Many clients replay overlapping batches and single events at once, against the running
# test cluster (PGHOST/PGPORT). Exactly-once means: every key stored once, accepted
# exactly once across all calls, never a conflict, and rollups equal to the stored events.
# Runs three times: direct writes on, off, and under repeatable read (where a replay that
# meets a key committed after its snapshot fails with a serialization failure and pgbench
# retries the transaction).
set -euo pipefail
for mode in direct statement repeatable_read; do
case $mode in
  direct) export PGOPTIONS="-c client_min_messages=warning"; retries=() ;;
  statement) export PGOPTIONS="-c client_min_messages=warning -c pg_billing.direct_writes=off"; retries=() ;;
  repeatable_read) export PGOPTIONS="-c client_min_messages=warning -c default_transaction_isolation=repeatable\\ read"
                   retries=(--max-tries=100) ;;
esac
db=pg_billing_stress
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql -X -q -v ON_ERROR_STOP=1 -o /dev/null -d "$db" -f "$(dirname "$0")/../fixtures/one_subscription.sql"
psql -X -q -v ON_ERROR_STOP=1 -o /dev/null -d "$db" <<'SQL'
-- 20 batches of 500 events drawn from 3,000 keys: heavy overlap between batches. A key's
-- payload depends only on the key, so every replay is an exact duplicate.
CREATE TABLE stress_batches AS
SELECT b AS id, jsonb_agg(jsonb_build_object(
         'external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', 'k' || k,
         'timestamp', '2026-03-01T00:00:00Z', 'properties', jsonb_build_object('tokens', k % 97))) AS events
FROM generate_series(1, 20) b, LATERAL (SELECT (hashint4(b * 1000 + i) & 2147483647) % 3000 AS k FROM generate_series(1, 500) i) keys
GROUP BY b;
CREATE TABLE stress_outcomes (status text NOT NULL);
SQL
cat > /tmp/pg_billing_stress_batch.sql <<'SQL'
\set b random(1, 20)
INSERT INTO stress_outcomes SELECT status FROM billing.ingest_events((SELECT events FROM stress_batches WHERE id = :b));
SQL
# Single events draw from twice the batches' keys: half replays, half new events.
cat > /tmp/pg_billing_stress_single.sql <<'SQL'
\set k random(0, 5999)
INSERT INTO stress_outcomes SELECT billing.ingest_event('sub', 'tokens', 'k' || :k, '2026-03-01T00:00:00Z', jsonb_build_object('tokens', :k % 97));
SQL
pgbench -n -c 8 -j 2 -t 25 "${retries[@]}" -f /tmp/pg_billing_stress_batch.sql "$db" >/dev/null
# 16 clients for single events: twice the rollup writer slots (backend pid mod 8), so
# backends share slots and fold into the same rollup rows at once.
pgbench -n -c 16 -j 2 -t 150 "${retries[@]}" -f /tmp/pg_billing_stress_single.sql "$db" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d "$db" -At <<'SQL'
SELECT format(current_setting('default_transaction_isolation') || ', direct writes ' || coalesce(current_setting('pg_billing.direct_writes', true), 'on') || ': stored %s distinct keys, accepted %s times, %s duplicates, %s conflicts, %s rejected; rollup events %s, rollup sum %s = event sum %s',
  (SELECT count(*) FROM billing.events),
  (SELECT count(*) FROM stress_outcomes WHERE status = 'accepted'),
  (SELECT count(*) FROM stress_outcomes WHERE status = 'duplicate'),
  (SELECT count(*) FROM stress_outcomes WHERE status = 'conflict'),
  (SELECT count(*) FROM stress_outcomes WHERE status = 'rejected'),
  (SELECT sum(events_count) FROM billing.usage_rollups),
  (SELECT sum(value_sum) FROM billing.usage_rollups),
  (SELECT sum(value) FROM billing.events));
DO $$
BEGIN
  IF (SELECT count(*) FROM billing.events) <> (SELECT count(*) FROM stress_outcomes WHERE status = 'accepted')
     OR (SELECT count(DISTINCT transaction_id) FROM billing.events) <> (SELECT count(*) FROM billing.events)
     OR EXISTS (SELECT 1 FROM stress_outcomes WHERE status IN ('conflict', 'rejected'))
     OR (SELECT sum(events_count) FROM billing.usage_rollups) <> (SELECT count(*) FROM billing.events)
     OR (SELECT sum(value_sum) FROM billing.usage_rollups) <> (SELECT sum(value) FROM billing.events)
  THEN
    RAISE EXCEPTION 'exactly-once violated';
  END IF;
END $$;
SQL
done
echo "stress: exactly once under concurrent replays (direct writes on, off, repeatable read)"
