#!/usr/bin/env bash
# Crash safety: kill -9 the server while clients ingest, restart it, and check that every
# acknowledged event is there and the day rollups still equal the stored events. Runs
# against the test cluster started by scripts/env.sh (PG_CLUSTER_DIR).
set -euo pipefail
export PGOPTIONS="-c client_min_messages=warning"
source "$(dirname "$0")/../../scripts/env.sh"
db=pg_billing_crash
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql -X -q -v ON_ERROR_STOP=1 -o /dev/null -d "$db" -f "$(dirname "$0")/../fixtures/one_subscription.sql"
psql -X -q -v ON_ERROR_STOP=1 -o /dev/null -d "$db" <<'SQL'
-- Acknowledged outcomes are written in the same transaction as the events they report.
CREATE TABLE acknowledged (transaction_id text PRIMARY KEY);
SQL
cat > /tmp/pg_billing_crash.sql <<'SQL'
\set b random(1, 1000000000)
INSERT INTO acknowledged SELECT transaction_id FROM billing.ingest_events((
  SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', :b || '-' || n,
                                      'timestamp', '2026-03-01T00:00:00Z', 'properties', jsonb_build_object('tokens', n)))
  FROM generate_series(1, 200) n)) WHERE status = 'accepted';
SQL
pgbench -n -c 4 -j 2 -T 30 -f /tmp/pg_billing_crash.sql "$db" >/dev/null 2>&1 &
bench=$!
sleep 3
crash_server "$PG_CLUSTER_DIR"
wait "$bench" || true
read -r acknowledged stored missing rollup_events rollup_sum event_sum < <(psql -X -q -At -F ' ' -v ON_ERROR_STOP=1 -d "$db" <<'SQL'
SELECT (SELECT count(*) FROM acknowledged), (SELECT count(*) FROM billing.events),
       (SELECT count(*) FROM acknowledged a LEFT JOIN billing.events e ON e.transaction_id = a.transaction_id
         WHERE e.transaction_id IS NULL),
       (SELECT sum(events_count) FROM billing.usage_rollups), (SELECT sum(value_sum) FROM billing.usage_rollups),
       (SELECT sum(value) FROM billing.events);
SQL
)
echo "after kill -9: $acknowledged acknowledged, $stored stored, $missing acknowledged but missing;" \
     "rollups $rollup_events events / sum $rollup_sum, events sum $event_sum"
if [ "$acknowledged" -eq 0 ] || [ "$missing" -ne 0 ] || [ "$rollup_events" != "$stored" ] || [ "$rollup_sum" != "$event_sum" ]; then
  echo "crash safety violated"; exit 1
fi
psql -X -q -d postgres -c "DROP DATABASE $db"
echo "crash: every acknowledged event survived kill -9, rollups consistent"
