#!/usr/bin/env bash
# pg_upgrade of a cluster with pg_billing: every billing row survives, the COPY intake's
# triggers still fire always, and ingestion carries on. Builds its own old and new
# clusters under target/ (same PostgreSQL binaries: what is checked is pg_billing's
# objects going through pg_upgrade's schema dump and restore).
set -euo pipefail
source "$(dirname "$0")/../../scripts/env.sh"
base=$ROOT/target/upgrade
old_port=55494 new_port=55495
for cluster in old new; do stop_cluster "$base/$cluster"; done
rm -rf "$base"; mkdir -p "$base"; chown postgres:postgres "$base"
for cluster in old new; do
  runuser -u postgres -- "$PG_BIN/initdb" -D "$base/$cluster/data" -A trust -U postgres --no-sync >/dev/null
done
echo "-p $old_port -k /tmp -c listen_addresses=''" > "$base/old/options"
echo "-p $new_port -k /tmp -c listen_addresses=''" > "$base/new/options"
trap 'stop_cluster "$base/old"; stop_cluster "$base/new"' EXIT
run_server "$base/old"
export PGHOST=/tmp PGUSER=postgres PGOPTIONS="-c client_min_messages=warning"
psql -X -q -p $old_port -d postgres -c "CREATE DATABASE app"
psql -X -q -v ON_ERROR_STOP=1 -o /dev/null -p $old_port -d app -f "$ROOT/tests/fixtures/one_subscription.sql"
psql -X -q -v ON_ERROR_STOP=1 -o /dev/null -p $old_port -d app <<'SQL'
SELECT count(*) FROM billing.ingest_events((SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 'sub',
  'code', 'tokens', 'transaction_id', 'e' || n, 'timestamp', '2026-03-01T00:00:00Z', 'properties', jsonb_build_object('tokens', n)))
  FROM generate_series(1, 50) n));
INSERT INTO billing.event_intake (external_subscription_id, code, transaction_id, "timestamp", properties)
VALUES ('sub', 'tokens', 'copied', '2026-03-02T00:00:00Z', '{"tokens": 7}'), ('nobody', 'tokens', 'bad', NULL, '{}');
SQL
rows_query="SELECT md5(string_agg(t || ':' || n, ',' ORDER BY t)) FROM (
  SELECT 'events' t, count(*) || '/' || sum(value) n FROM billing.events
  UNION ALL SELECT 'rollups', sum(events_count) || '/' || sum(value_sum) FROM billing.usage_rollups
  UNION ALL SELECT 'rejected', count(*)::text FROM billing.rejected_events
  UNION ALL SELECT 'subscriptions', count(*)::text FROM billing.subscriptions) s"
before=$(psql -X -At -p $old_port -d app -c "$rows_query")
stop_cluster "$base/old"
(cd "$base" && runuser -u postgres -- "$PG_BIN/pg_upgrade" -b "$PG_BIN" -B "$PG_BIN" \
   -d "$base/old/data" -D "$base/new/data" -p $old_port -P $new_port > "$base/pg_upgrade.log" 2>&1) \
  || { echo "upgrade: pg_upgrade failed"; tail -20 "$base/pg_upgrade.log"; exit 1; }
run_server "$base/new"
failures=0
after=$(psql -X -At -p $new_port -d app -c "$rows_query")
[ "$before" = "$after" ] || { echo "upgrade: billing rows differ after pg_upgrade"; failures=1; }
always=$(psql -X -At -p $new_port -d app -c "SELECT string_agg(tgname || '=' || tgenabled::text, ' ' ORDER BY tgname)
  FROM pg_trigger WHERE tgrelid = 'billing.event_intake'::regclass")
[ "$always" = "intake_end=A intake_row=A intake_start=A" ] || { echo "upgrade: intake triggers are $always"; failures=1; }
counts=$(psql -X -q -At -p $new_port -d app \
  -c "INSERT INTO billing.event_intake (external_subscription_id, code, transaction_id, \"timestamp\", properties)
      VALUES ('sub', 'tokens', 'after-upgrade', '2026-03-03T00:00:00Z', '{\"tokens\": 1}'), ('sub', 'tokens', 'e1', '2026-03-01T00:00:00Z', '{\"tokens\": 1}')" \
  -c "SELECT accepted || ' ' || duplicates FROM billing.last_intake()")
[ "$counts" = "1 1" ] || { echo "upgrade: ingestion after pg_upgrade counted '$counts'"; failures=1; }
[ $failures -eq 0 ] && echo "upgrade: every billing row kept, intake triggers fire always, ingestion continues"
exit $failures
