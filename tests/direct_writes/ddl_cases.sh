#!/usr/bin/env bash
# The direct write path against every way a DBA can alter billing.events: for each case the
# same workload (a 20-event batch, a batch of replays, single events, a COPY into the intake)
# runs once with pg_billing.direct_writes on and once off, in two databases altered alike.
# The outputs (statuses, errors, stored rows, rollups) must be identical; afterwards both
# databases pass amcheck (bt_index_check with heapallindexed, verify_heapam) and their day
# rollups equal their events. billing.direct_write_status() must report the expected reason.
# Where the DDL leaves the statements working, the workload must also run without an error.
# Runs against the running test cluster (PGHOST/PGPORT).
set -euo pipefail
export PGOPTIONS="-c client_min_messages=warning"
here=$(cd "$(dirname "$0")" && pwd)
work=${TMPDIR:-/tmp}/pg_billing_direct_writes
rm -rf "$work"; mkdir -p "$work"
failures=0

# case name | DDL applied after the fixture | reason direct_write_status() must give ('' = direct)
cases=(
  "stock||"
  "not_null|ALTER TABLE billing.events ALTER COLUMN precise_total_amount_cents SET NOT NULL;|column precise_total_amount_cents differs in its NOT NULL"
  "check|ALTER TABLE billing.events ADD CONSTRAINT small_values CHECK (value < 1000);|the table has CHECK constraints"
  "domain|CREATE DOMAIN public.positive AS numeric CHECK (VALUE > 0); ALTER TABLE billing.events ALTER COLUMN value TYPE public.positive;|column value differs in its type"
  "varchar_typmod|ALTER TABLE billing.events ALTER COLUMN transaction_id TYPE varchar(8) COLLATE \"C\";|column transaction_id differs in its type"
  "numeric_typmod|ALTER TABLE billing.events ALTER COLUMN value TYPE numeric(8,2);|column value differs in its type modifier"
  "default|ALTER TABLE billing.events ALTER COLUMN ingested_at SET DEFAULT '2000-01-01 00:00+00';|column ingested_at differs in its default"
  "collation|CREATE COLLATION public.loose (provider = icu, locale = 'und-u-ks-level2', deterministic = false); ALTER TABLE billing.events ALTER COLUMN transaction_id TYPE text COLLATE public.loose;|column transaction_id differs in its collation"
  "key_order|ALTER TABLE billing.events DROP CONSTRAINT events_idempotency_key, ADD CONSTRAINT events_idempotency_key UNIQUE (customer_id, subscription_id, transaction_id);|the unique index is not the expected key"
  "renamed_key|ALTER TABLE billing.events RENAME CONSTRAINT events_idempotency_key TO idempotency;|"
  "rollup_trigger|CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS \$\$BEGIN UPDATE billing.usage_rollups SET latest_value = latest_value WHERE customer_id = NEW.customer_id AND day = NEW.local_day; RETURN NEW; END\$\$; CREATE TRIGGER touch BEFORE INSERT ON billing.events FOR EACH ROW EXECUTE FUNCTION public.touch();|the table has triggers"
  "primary_key|ALTER TABLE billing.events ADD PRIMARY KEY (id);|the table has more than one unique index"
  "dropped_column|ALTER TABLE billing.events ADD COLUMN note text; ALTER TABLE billing.events DROP COLUMN note;|the table has 13 columns (dropped ones included), not 12"
  "partition|CREATE TABLE public.all_events (LIKE billing.events INCLUDING DEFAULTS) PARTITION BY RANGE (local_day); ALTER TABLE public.all_events ATTACH PARTITION billing.events FOR VALUES FROM ('2026-03-01') TO ('2026-03-03');|the table is a partition"
  "replica_identity|ALTER TABLE billing.events REPLICA IDENTITY NOTHING; ALTER TABLE billing.usage_rollups REPLICA IDENTITY NOTHING; CREATE PUBLICATION everything FOR ALL TABLES;|the table's replica identity is not the default"
  "trigger|CREATE FUNCTION public.stamp() RETURNS trigger LANGUAGE plpgsql AS \$\$BEGIN NEW.properties := jsonb_set(NEW.properties, '{seen}', 'true'); RETURN NEW; END\$\$; CREATE TRIGGER stamp BEFORE INSERT ON billing.events FOR EACH ROW EXECUTE FUNCTION public.stamp();|the table has triggers"
  "no_select|CREATE ROLE direct_ingester_@mode@; GRANT USAGE ON SCHEMA billing TO direct_ingester_@mode@; GRANT SELECT ON billing.subscription_directory, billing.billable_metrics, billing.charges, billing.charge_filters TO direct_ingester_@mode@; GRANT INSERT ON billing.events TO direct_ingester_@mode@; GRANT USAGE ON SEQUENCE billing.events_id_seq TO direct_ingester_@mode@; GRANT SELECT, INSERT, UPDATE ON billing.usage_rollups TO direct_ingester_@mode@; GRANT INSERT ON billing.rejected_events, billing.event_intake TO direct_ingester_@mode@; GRANT EXECUTE ON FUNCTION billing.direct_write_status() TO direct_ingester_@mode@; SET ROLE direct_ingester_@mode@;|the current role lacks SELECT on the table"
)

# Cases whose DDL leaves the statements working: their workload must raise no error.
clean_cases=" stock renamed_key rollup_trigger trigger check default dropped_column primary_key key_order "

# The workload: its output is compared between the two settings. Values have at most two
# decimals and stay below 1,000,000 so that numeric(8,2) stores them unchanged.
cat > "$work/workload.sql" <<'SQL'
-- Terse errors: a failing row's DETAIL shows its ingestion time, which differs between runs.
\set VERBOSITY terse
SELECT index, transaction_id, status, reason FROM billing.ingest_events((
  SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens',
           'transaction_id', 'b' || n, 'timestamp', '2026-03-0' || (1 + n % 2) || 'T10:00:00Z',
           'properties', jsonb_build_object('tokens', n * 1.25)))
  FROM generate_series(1, 20) n));
-- Replays of the first batch (same payload, then case-changed keys and changed payloads),
-- with new keys, one of them long, one out of the partition's bounds.
SELECT index, transaction_id, status, reason FROM billing.ingest_events((
  SELECT jsonb_agg(e) FROM (
    SELECT jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', 'b' || n,
             'timestamp', '2026-03-0' || (1 + n % 2) || 'T10:00:00Z', 'properties', jsonb_build_object('tokens', n * 1.25)) AS e
    FROM generate_series(1, 8) n
    UNION ALL
    SELECT jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', 'B' || n,
             'timestamp', '2026-03-01T11:00:00Z', 'properties', jsonb_build_object('tokens', 7))
    FROM generate_series(9, 12) n
    UNION ALL
    SELECT jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', 'n' || n,
             'timestamp', '2026-03-02T12:00:00Z', 'properties', jsonb_build_object('tokens', n))
    FROM generate_series(1, 6) n
    UNION ALL
    SELECT jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', 'a-long-transaction-id',
             'timestamp', '2026-03-02T12:00:00Z', 'properties', jsonb_build_object('tokens', 1))
    UNION ALL
    SELECT jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', 'late',
             'timestamp', '2026-03-05T12:00:00Z', 'properties', jsonb_build_object('tokens', 1))) batch));
SELECT billing.ingest_event('sub', 'tokens', 's1', '2026-03-01 09:00+00', '{"tokens": 3}');
SELECT billing.ingest_event('sub', 'tokens', 's1', '2026-03-01 09:00+00', '{"tokens": 3}');
SELECT billing.ingest_event('sub', 'tokens', 'S1', '2026-03-01 09:00+00', '{"tokens": 4}');
SELECT billing.ingest_event('sub', 'tokens', 'b3', '2026-03-02 10:00+00', '{"tokens": 3.75}');
SELECT billing.ingest_event('sub', 'tokens', 's2', '2026-03-02 09:00+00', '{"tokens": 0}');
COPY billing.event_intake (external_subscription_id, code, transaction_id, "timestamp", properties) FROM stdin;
sub	tokens	c1	2026-03-01T08:00:00Z	{"tokens": 2}
sub	tokens	c2	2026-03-01T08:00:00Z	{"tokens": 5.5}
sub	tokens	b1	2026-03-02T10:00:00Z	{"tokens": 1.25}
sub	tokens	c3	2026-03-02T08:00:00Z	{"tokens": 9}
\.
SELECT * FROM billing.last_intake();
RESET ROLE;
SELECT transaction_id, local_day, value, precise_total_amount_cents, properties, ingested_at = now() AS ingested_now
FROM billing.events ORDER BY transaction_id COLLATE "C";
SELECT day, sum(events_count) AS events, sum(value_sum) AS value_sum, max(value_max) AS value_max
FROM billing.usage_rollups GROUP BY day ORDER BY day;
SELECT sqlstate, reason FROM billing.rejected_events ORDER BY id;
-- JIT tuple deforming reads every column as the table's descriptor declares it.
SET jit = on; SET jit_above_cost = 0;
SELECT count(*), sum(value), count(precise_total_amount_cents) FROM billing.events;
RESET jit; RESET jit_above_cost;
SQL

# Checks run in each database after the workload: fail loudly.
cat > "$work/checks.sql" <<'SQL'
CREATE EXTENSION IF NOT EXISTS amcheck;
SELECT count(*) FILTER (WHERE bt_index_check(i.indexrelid, true) IS NULL) AS indexes_checked
FROM pg_index i WHERE i.indrelid IN ('billing.events'::regclass, 'billing.usage_rollups'::regclass);
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM verify_heapam('billing.events')) OR EXISTS (SELECT 1 FROM verify_heapam('billing.usage_rollups')) THEN
    RAISE EXCEPTION 'verify_heapam found corruption';
  END IF;
  IF EXISTS (
    SELECT 1 FROM (SELECT customer_id, subscription_id, billable_metric_id, local_day, dims, count(*) AS n, coalesce(sum(value), 0) AS s
                   FROM billing.events GROUP BY 1, 2, 3, 4, 5) e
    FULL JOIN (SELECT customer_id, subscription_id, billable_metric_id, day, dims, sum(events_count) AS n, sum(value_sum) AS s
               FROM billing.usage_rollups GROUP BY 1, 2, 3, 4, 5) r
      ON (e.customer_id, e.subscription_id, e.billable_metric_id, e.local_day, e.dims)
       = (r.customer_id, r.subscription_id, r.billable_metric_id, r.day, r.dims)
    WHERE e.n IS DISTINCT FROM r.n OR e.s IS DISTINCT FROM r.s) THEN
    RAISE EXCEPTION 'day rollups differ from the stored events';
  END IF;
END $$;
SQL

# Roles are cluster-wide: case no_select makes one per setting, dropped with its database
# before a run.
for mode in on off; do
  psql -X -q -d postgres -c "DROP DATABASE IF EXISTS pg_billing_dw_no_select_$mode" -c "DROP ROLE IF EXISTS direct_ingester_$mode"
done

for entry in "${cases[@]}"; do
  IFS='|' read -r name ddl expected <<<"$entry"
  outputs=()
  for mode in on off; do
    db="pg_billing_dw_${name}_${mode}"
    psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    psql -X -q -v ON_ERROR_STOP=1 -o /dev/null -d "$db" -f "$here/../fixtures/one_subscription.sql"
    out="$work/$name.$mode.out"
    # The DDL and the workload in one session, so that SET ROLE holds for the workload.
    { echo "SET pg_billing.direct_writes = $mode;"; echo "${ddl//@mode@/$mode}"; echo '\o '"$work/$name.$mode.status"
      echo '\pset tuples_only on'; echo '\pset format unaligned'
      echo "SELECT direct, reason FROM billing.direct_write_status();"
      echo '\pset format aligned'; echo '\pset tuples_only off'; echo '\o'; cat "$work/workload.sql"; } \
      | psql -X -q -d "$db" >"$out" 2>&1 || true
    if ! psql -X -q -v ON_ERROR_STOP=1 -o /dev/null -d "$db" -f "$work/checks.sql" 2>"$work/$name.$mode.checks"; then
      echo "direct writes, case $name, direct_writes=$mode: $(cat "$work/$name.$mode.checks")"; failures=$((failures + 1))
    fi
    outputs+=("$out")
  done
  if ! diff -u "${outputs[0]}" "${outputs[1]}" >"$work/$name.diff"; then
    echo "direct writes, case $name: the direct path and the statement differ:"; head -40 "$work/$name.diff"; failures=$((failures + 1))
  fi
  status=$(cat "$work/$name.on.status")
  if [ -z "$expected" ]; then want_status="t|"; else want_status="f|$expected"; fi
  if [ "$status" != "$want_status" ]; then
    echo "direct writes, case $name: direct_write_status() says '$status', expected '$want_status'"; failures=$((failures + 1))
  fi
  if [[ "$clean_cases" == *" $name "* ]] && grep -q "ERROR" "$work/$name.on.out" "$work/$name.off.out"; then
    echo "direct writes, case $name: the workload raised an error:"; grep -h "ERROR" "$work/$name.on.out" "$work/$name.off.out" | head -5
    failures=$((failures + 1))
  fi
  if grep -q "terminated by signal\|server closed the connection" "$work/$name.on.out" "$work/$name.off.out"; then
    echo "direct writes, case $name: the server crashed"; failures=$((failures + 1))
  fi
done

if [ "$failures" -ne 0 ]; then
  echo "direct writes: $failures failures (outputs in $work)"
  exit 1
fi
echo "direct writes: ${#cases[@]} table shapes, direct path and statement agree, amcheck clean, rollups equal events"
