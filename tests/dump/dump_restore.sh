#!/usr/bin/env bash
# pg_dump of a database with pg_billing restores every billing row, and ingestion carries
# on after the restore (sequences restored too). Runs against the test cluster (PGHOST/PGPORT).
set -euo pipefail
export PGOPTIONS="-c client_min_messages=warning"
src=pg_billing_dump_src dst=pg_billing_dump_dst dump=$(mktemp /tmp/pg_billing_dump.XXXXXX)
psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $src" -c "DROP DATABASE IF EXISTS $dst" -c "CREATE DATABASE $src" -c "CREATE DATABASE $dst"
psql -X -q -v ON_ERROR_STOP=1 -o /dev/null -d "$src" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pg_billing;
SELECT billing.create_billing_entity('eu', 'Acme Europe', 'EUR', 'Europe/Paris');
SELECT billing.create_customer('acme', 'Acme', billing_entity => 'eu');
SELECT billing.create_billable_metric('tokens', 'Tokens', 'sum', 'tokens', filters => '{"model": ["small", "large"]}');
SELECT billing.create_plan('pro', 'Pro', 'monthly', 99, 'EUR', '[{"billable_metric_code": "tokens", "charge_model": "standard",
  "properties": {"amount": "0.002"}, "filters": [{"values": {"model": ["large"]}, "properties": {"amount": "0.01"}}]}]');
SELECT billing.create_subscription('sub', 'acme', 'pro', '2026-01-01 00:00+01');
SELECT * FROM billing.ingest_events((SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens',
  'transaction_id', 'e' || n, 'timestamp', '2026-03-01T00:00:00Z', 'properties', jsonb_build_object('tokens', n, 'model', 'large')))
  FROM generate_series(1, 50) n) || '[{"external_subscription_id": "sub", "code": "nope", "transaction_id": "bad"}]'::jsonb);
INSERT INTO billing.event_staging (external_subscription_id, code, transaction_id, properties) VALUES ('sub', 'tokens', 'staged', '{"tokens": 1}');
SQL
pg_dump -Fc -d "$src" -f "$dump"
pg_restore -d "$dst" "$dump"
rm -f "$dump"
differences=0
for table in billing_entities customers billable_metrics plans plan_versions charges charge_filters subscriptions \
             events usage_rollups rejected_events event_staging; do
  # The default entity is recreated by CREATE EXTENSION on restore, with a new created_at.
  query="SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM billing.$table x"
  [ "$table" = billing_entities ] && query="$query WHERE code <> 'default'"
  if [ "$(psql -X -At -d "$src" -c "$query")" != "$(psql -X -At -d "$dst" -c "$query")" ]; then
    echo "dump: billing.$table differs after restore"; differences=1
  fi
done
outcome=$(psql -X -At -d "$dst" -c "SELECT billing.ingest_event('sub', 'tokens', 'after-restore', '2026-03-02', '{\"tokens\": 5, \"model\": \"small\"}')")
[ "$outcome" = accepted ] || { echo "dump: ingestion after restore said $outcome"; differences=1; }
psql -X -q -d postgres -c "DROP DATABASE $src" -c "DROP DATABASE $dst"
[ $differences -eq 0 ] && echo "dump: every billing row restored, ingestion continues"
exit $differences
