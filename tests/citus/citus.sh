#!/usr/bin/env bash
# The Citus tier: pg_billing distributed by billing.distribute() on a real Citus cluster (a
# coordinator and two workers on loopback), against one server.
#   1. tests/citus/scenario.sql (every ingestion path with accepted, duplicate, conflicting
#      and rejected events, a rolled-back caller, a termination, usage from rollups and raw
#      events checked against the stored events) prints the same on one server and on Citus;
#   2. 8 clients replay overlapping batches and 8 send single events on Citus: every key
#      stored and accepted once, no conflict, rollups equal to the events;
#   3. another session's termination reaches a session's cached catalog;
#   4. a customer's usage reads touch one shard of each per-customer table (the commands
#      Citus sends to the workers, logged).
# Runs when Citus 13.2 is installed in the system PostgreSQL 15, or when CITUS_BUILD names a
# script that installs it (.ci/run sets it to ../shared/tools/build-citus); otherwise prints
# "citus: skipped" and exits 0 with the word skipped for the summary line (exit code 3).
source "$(dirname "$0")/../../scripts/env.sh"
source "$ROOT/tests/citus/cluster.sh"
if ! citus_installed && [ -n "${CITUS_BUILD:-}" ]; then
  log "installing Citus with $CITUS_BUILD"
  "$CITUS_BUILD"
fi
if ! citus_installed; then
  echo "citus: skipped (Citus 13.2 is not installed; set CITUS_BUILD=../shared/tools/build-citus to build it)"
  exit 3
fi
export PGOPTIONS="-c client_min_messages=warning"
work=$ROOT/target/citus
rm -rf "$work"; mkdir -p "$work"; chmod 777 "$work"

# One server, in the test cluster of the other tiers (or one of its own when run alone).
single_port=${PGPORT:-}
own_single=
if [ -z "$single_port" ] || ! psql -X -q -d postgres -c "SELECT 1" >/dev/null 2>&1; then
  start_cluster "$ROOT/target/citus-single" 55446
  single_port=55446 own_single=$ROOT/target/citus-single
fi
PGPORT=$single_port psql -X -q -d postgres -c "DROP DATABASE IF EXISTS pg_billing_citus_single" -c "CREATE DATABASE pg_billing_citus_single"
PGPORT=$single_port psql -X -q -d pg_billing_citus_single -c "CREATE EXTENSION pg_billing"
PGPORT=$single_port psql -X -a -d pg_billing_citus_single -f "$ROOT/tests/citus/scenario.sql" >"$work/single.out" 2>&1

start_citus_cluster "$ROOT/target/citus-cluster" 55443
if [ -n "$own_single" ]; then trap "stop_citus_cluster '$ROOT/target/citus-cluster'; stop_cluster '$own_single'" EXIT; fi
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d postgres "$@"; }
q -c "CREATE EXTENSION pg_billing"
q -c "SELECT table_name || ': ' || placement FROM billing.distribute(shard_count => 8)" >"$work/distribute.out"
psql -X -a -d postgres -f "$ROOT/tests/citus/scenario.sql" >"$work/citus.out" 2>&1

failures=0
fail() { echo "citus: $*"; failures=$((failures + 1)); }
[ "$(wc -l <"$work/distribute.out")" -eq 51 ] || fail "billing.distribute() placed: $(tr '\n' ';' <"$work/distribute.out")"
[ "$(q -c "SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text LIKE 'billing.%' AND partmethod = 'h'")" = 27 ] ||
  fail "not 27 tables distributed by hash"
if ! diff -u "$work/single.out" "$work/citus.out" >"$work/scenario.diff"; then
  fail "the scenario differs between one server and Citus:"; head -60 "$work/scenario.diff"
fi
grep -q "usage_equals_events" "$work/citus.out" && ! grep -A12 "usage_equals_events" "$work/citus.out" | grep -q "| f$" ||
  fail "usage differs from the stored events"

# Replays across clients on the distributed cluster.
q >/dev/null <<'SQL'
CREATE TABLE stress_batches AS
SELECT b AS id, jsonb_agg(jsonb_build_object(
         'external_subscription_id', (ARRAY['sub-acme', 'sub-tokyo'])[k % 2 + 1], 'code', 'calls', 'transaction_id', 'k' || k,
         'timestamp', '2026-03-05T00:00:00Z')) AS events
FROM generate_series(1, 20) b, LATERAL (SELECT (hashint4(b * 1000 + i) & 2147483647) % 2000 AS k FROM generate_series(1, 200) i) keys
GROUP BY b;
CREATE TABLE stress_outcomes (status text NOT NULL);
SQL
before=$(q -c "SELECT count(*) FROM billing.events")
cat >"$work/batch.sql" <<'SQL'
\set b random(1, 20)
INSERT INTO stress_outcomes SELECT status FROM billing.ingest_events((SELECT events FROM stress_batches WHERE id = :b));
SQL
cat >"$work/single.sql" <<'SQL'
\set k random(0, 3999)
INSERT INTO stress_outcomes SELECT billing.ingest_event((ARRAY['sub-acme', 'sub-tokyo'])[:k % 2 + 1], 'calls', 'k' || :k, '2026-03-05T00:00:00Z');
SQL
pgbench -n -c 8 -j 2 -t 15 -f "$work/batch.sql" postgres >"$work/pgbench_batch.log" 2>&1 || fail "batch replays failed: $(tail -3 "$work/pgbench_batch.log")"
pgbench -n -c 8 -j 2 -t 60 -f "$work/single.sql" postgres >"$work/pgbench_single.log" 2>&1 || fail "single replays failed: $(tail -3 "$work/pgbench_single.log")"
stress=$(q -c "SELECT (SELECT count(*) FROM billing.events) - $before = (SELECT count(*) FROM stress_outcomes WHERE status = 'accepted')
  AND (SELECT count(*) FROM billing.events WHERE transaction_id LIKE 'k%') = (SELECT count(DISTINCT (subscription_id, transaction_id)) FROM billing.events WHERE transaction_id LIKE 'k%')
  AND NOT EXISTS (SELECT 1 FROM stress_outcomes WHERE status IN ('conflict', 'rejected'))
  AND (SELECT sum(events_count) FROM billing.usage_rollups) = (SELECT count(*) FROM billing.events)
  AND (SELECT sum(value_sum) FROM billing.usage_rollups) = (SELECT coalesce(sum(value), 0) FROM billing.events)")
[ "$stress" = t ] || fail "replays across clients broke exactly-once: $(q -c "SELECT status, count(*) FROM stress_outcomes GROUP BY 1")"
accepted=$(q -c "SELECT count(*) FROM stress_outcomes WHERE status = 'accepted'")
replays=$(q -c "SELECT count(*) FROM stress_outcomes WHERE status = 'duplicate'")

# Another session's change reaches this session's cached catalog: a session ingests for a
# subscription (and caches it), a second one terminates it, and the first one's next event
# after the termination is rejected.
cache=$(psql -X -q -At -d postgres -v ON_ERROR_STOP=1 2>&1 <<'SQL' || true
SELECT billing.create_subscription('sub-cached', 'acme', 'api', '2026-03-01 00:00+00') IS NOT NULL;
SELECT billing.ingest_event('sub-cached', 'calls', 'cached-1', '2026-03-05 00:00+00');
\! psql -X -q -At -d postgres -c "SELECT status FROM billing.terminate_subscription('sub-cached', '2026-03-06 00:00+00')"
SELECT billing.ingest_event('sub-cached', 'calls', 'cached-2', '2026-03-07 00:00+00');
SQL
)
case "$cache" in
  *"is not active at the event's timestamp"*) ;;
  *) fail "another session's termination did not reach the cached catalog: $(echo $cache)" ;;
esac

# A customer's usage touches one shard group: the commands Citus sends to the workers for
# billing.usage and billing.current_usage name one shard of each per-customer table.
remote=$(psql -X -q -d postgres -c "SET citus.log_remote_commands = on" -c "SET client_min_messages = log" \
  -c "SELECT count(*) FROM billing.usage('sub-acme', '2026-03-01', '2026-03-31 23:59:59')" \
  -c "SELECT count(*) FROM billing.usage('sub-acme', '2026-03-10 12:00', '2026-03-20 12:00')" \
  -c "SELECT count(*) FROM billing.current_usage('sub-acme')" 2>&1 | grep -Eo 'billing\.(customers|subscriptions|events|usage_rollups)_[0-9]+' | sort -u)
shards_per_table=$(echo "$remote" | sed 's/_[0-9]*$//' | sort | uniq -c | awk '$1 > 1')
[ -n "$remote" ] && [ -z "$shards_per_table" ] || fail "usage of one customer read more than one shard group: $(echo $remote)"
shard_groups=$(echo "$remote" | wc -l)

if [ "$failures" -ne 0 ]; then exit 1; fi
echo "citus: billing.distribute() on a coordinator and 2 workers (8 shards); the scenario ($(grep -c '' "$work/citus.out") lines) prints the same as on one server; $accepted events accepted once and $replays replays duplicate across 16 clients, rollups equal to events; a customer's usage reads $shard_groups shards, one per table"
