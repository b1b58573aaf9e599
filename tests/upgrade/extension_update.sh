#!/usr/bin/env bash
# Tier 9: a database on each earlier release of pg_billing, with data in it, is upgraded by
# ALTER EXTENSION pg_billing UPDATE (through every upgrade script in between); its schema must then equal a fresh install's (every
# member object, column, constraint, index, trigger, view, routine, comment and grant,
# compared through the catalogs by schema_snapshot.sql), every row must survive, and
# ingestion and usage must carry on. Runs against the running test cluster (PGHOST/PGPORT)
# with the extension installed (scripts/env.sh installs the frozen scripts of earlier
# releases next to the current one).
set -euo pipefail
export PGOPTIONS="-c client_min_messages=warning"
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${TMPDIR:-/tmp}/pg_billing_extension_update
rm -rf "$work"; mkdir -p "$work"

current=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -1)
releases=$(cd "$root/sql" && ls | sed -n 's/^pg_billing--\([0-9]*\.[0-9]*\.[0-9]*\)\.sql$/\1/p' | sort -V | grep -vx "$current" || true)
if [ -z "$releases" ]; then
  echo "extension update: no earlier release than $current to upgrade from"; exit 1
fi

q() { psql -X -q -v ON_ERROR_STOP=1 -At -d "$1" "${@:2}"; }
# update_from RELEASE: the whole check, from one earlier release.
update_from() {
  local previous=$1
  for db in pg_billing_update pg_billing_fresh; do
    psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  done

  # The previous release, with a catalog, events and a reject.
  q pg_billing_update -c "CREATE EXTENSION pg_billing VERSION '$previous'" >/dev/null
  q pg_billing_update >/dev/null <<'SQL'
SELECT billing.create_customer('acme', 'Acme', 'EUR', 'Europe/Paris');
SELECT billing.create_billable_metric('tokens', 'Tokens', 'sum', 'tokens', filters => '{"model": ["small", "large"]}');
SELECT billing.create_plan('api', 'API', 'monthly', 0, 'EUR', '[{"billable_metric_code": "tokens", "charge_model": "standard",
  "properties": {"amount": "0.5"}, "filters": [{"values": {"model": ["large"]}, "properties": {"amount": "2"}}],
  "pricing_group_keys": ["project"]}]');
SELECT billing.create_subscription('sub', 'acme', 'api', '2026-01-01 00:00+01');
-- Events as ingestion stores them, written as rows: the server runs this build's library,
-- which ingests only into its own version's schema (it asks for the update otherwise).
INSERT INTO billing.events (customer_id, subscription_id, transaction_id, billable_metric_id, "timestamp", local_day,
                            properties, value, dims)
SELECT s.customer_id, s.id, t.transaction_id, m.id, t.at, (t.at AT TIME ZONE 'Europe/Paris')::date, t.properties,
       (t.properties ->> 'tokens')::numeric, jsonb_build_object('model', t.properties -> 'model', 'project', t.properties -> 'project')
FROM billing.subscriptions s, billing.billable_metrics m,
     (SELECT 'before-' || n, '2026-03-01T10:00:00Z'::timestamptz,
             jsonb_build_object('tokens', n, 'model', CASE WHEN n % 3 = 0 THEN 'large' ELSE 'small' END, 'project', 'p' || n % 2)
      FROM generate_series(1, 20) n
      UNION ALL SELECT 'before-single', '2026-03-02 10:00+00', '{"tokens": 7, "model": "small", "project": "p0"}') t(transaction_id, at, properties)
WHERE s.external_id = 'sub' AND m.code = 'tokens'
ORDER BY t.at, t.transaction_id;
INSERT INTO billing.usage_rollups (customer_id, subscription_id, billable_metric_id, day, dims, slot, events_count, value_sum,
                                   value_max, latest_at, latest_event_id, latest_value)
SELECT e.customer_id, e.subscription_id, e.billable_metric_id, e.local_day, e.dims, 0, count(*), sum(e.value), max(e.value),
       max(e."timestamp"), (array_agg(e.id ORDER BY e."timestamp" DESC, e.id DESC))[1],
       (array_agg(e.value ORDER BY e."timestamp" DESC, e.id DESC))[1]
FROM billing.events e GROUP BY 1, 2, 3, 4, 5;
INSERT INTO billing.rejected_events (external_subscription_id, transaction_id, code, payload, sqlstate, reason)
VALUES ('nobody', 'lost', 'tokens', '{"external_subscription_id": "nobody", "code": "tokens", "transaction_id": "lost"}',
        '23503', 'unknown subscription "nobody"');
SQL
  count_rows="SELECT string_agg(format('%s=%s', c.relname,
  (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM billing.%I', c.relname), false, true, '')))[1]), ' '
  ORDER BY c.relname) FROM pg_class c WHERE c.relnamespace = 'billing'::regnamespace AND c.relkind = 'r'"
  usage="SELECT string_agg(format('%s %s %s %s', coalesce(filter_values::text, 'default'), grouped_by, units, amount), '; '
  ORDER BY filter_values::text NULLS FIRST, grouped_by::text) FROM billing.usage('sub', '2026-03-01 00:00+01', '2026-03-31 23:59:59.999999+02')"
  rows_before=$(q pg_billing_update -c "$count_rows")
  usage_before=$(q pg_billing_update -c "$usage")

  # Before the update, ingestion with this build's library asks for it (55000), writing nothing.
  refused=$(psql -X -q -At -d pg_billing_update -v VERBOSITY=verbose \
    -c "SELECT billing.ingest_event('sub', 'tokens', 'too-early', '2026-03-02 10:00+00', '{\"tokens\": 1}')" 2>&1 || true)
  case "$refused" in
    *"55000"*"ALTER EXTENSION pg_billing UPDATE"*) ;;
    *) echo "extension update $previous -> $current: ingestion before the update gave: $refused"; return 1 ;;
  esac
  q pg_billing_update -c "ALTER EXTENSION pg_billing UPDATE" >/dev/null
  version=$(q pg_billing_update -c "SELECT extversion FROM pg_extension WHERE extname = 'pg_billing'")
  q pg_billing_fresh -c "CREATE EXTENSION pg_billing" >/dev/null

  failures=0
  fail() { echo "extension update $previous -> $current: $*"; failures=$((failures + 1)); }
  [ "$version" = "$current" ] || fail "the upgraded database is at $version"
  q pg_billing_update -f "$here/schema_snapshot.sql" >"$work/upgraded.txt"
  q pg_billing_fresh -f "$here/schema_snapshot.sql" >"$work/fresh.txt"
  if ! diff -u "$work/fresh.txt" "$work/upgraded.txt" >"$work/schema.diff"; then
    fail "the upgraded schema differs from a fresh install's:"; head -40 "$work/schema.diff"
  fi
  # The stored prices are plain canonical JSON now, with the amounts the plan was created with.
  prices=$(q pg_billing_update -c "SELECT c.price #>> '{properties,amount}', f.price #>> '{properties,amount}',
  c.price ->> 'charge_model', jsonb_typeof(c.price), c.price = billing.price(c.price)::jsonb
  FROM billing.charges c JOIN billing.charge_filters f ON f.charge_id = c.id")
  [ "$prices" = "0.5|2|standard|object|t" ] || fail "prices after the update: $prices"
  # Every table there was keeps its rows (tables the update adds are filled from them).
  rows_after=" $(q pg_billing_update -c "$count_rows") "
  for table_rows in $rows_before; do
    [[ "$rows_after" == *" $table_rows "* ]] || fail "rows changed: $rows_before ->$rows_after"
  done
  [ "$(q pg_billing_update -c "$usage")" = "$usage_before" ] || fail "usage changed: $usage_before -> $(q pg_billing_update -c "$usage")"

  # Ingestion carries on, through every path, and the rollups still equal the events.
  after=$(q pg_billing_update <<'SQL'
SELECT string_agg(status, ',') FROM (SELECT status, count(*) FROM billing.ingest_events((
  SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 'sub', 'code', 'tokens', 'transaction_id', 'after-' || n,
                                        'timestamp', '2026-03-03T10:00:00Z', 'properties', jsonb_build_object('tokens', n, 'model', 'small', 'project', 'p1')))
  FROM generate_series(1, 20) n)) GROUP BY status) s;
SELECT billing.ingest_event('sub', 'tokens', 'before-single', '2026-03-02 10:00+00', '{"tokens": 7, "model": "small", "project": "p0"}');
SELECT billing.ingest_event('sub', 'tokens', 'after-single', '2026-03-04 10:00+00', '{"tokens": 1, "model": "large", "project": "p0"}');
SELECT (SELECT count(*) FROM billing.events) = (SELECT sum(events_count) FROM billing.usage_rollups)
   AND (SELECT sum(value) FROM billing.events) = (SELECT sum(value_sum) FROM billing.usage_rollups);
SQL
  )
  [ "$after" = "$(printf 'accepted\nduplicate\naccepted\nt')" ] || fail "ingestion after the update gave: $(echo "$after" | tr '\n' ' ')"


  # An ingesting role and a reading role granted as the earlier release's documentation
  # (docs/ingestion.md#privileges) says keep working through the update (in a database of their own: grants and revokes
  # leave explicit ACLs behind, which the schema comparison would see).
  psql -X -q -d postgres -c "DROP DATABASE IF EXISTS pg_billing_update_roles" -c "CREATE DATABASE pg_billing_update_roles" \
    -c "DROP ROLE IF EXISTS billing_update_ingester" -c "DROP ROLE IF EXISTS billing_update_reader"
  q pg_billing_update_roles >/dev/null <<SQL
CREATE EXTENSION pg_billing VERSION '$previous';
SELECT billing.create_customer('acme', 'Acme', 'EUR', 'Europe/Paris');
SELECT billing.create_billable_metric('tokens', 'Tokens', 'sum', 'tokens');
SELECT billing.create_plan('api', 'API', 'monthly', 0, 'EUR', '[{"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "0.5"}}]');
SELECT billing.create_subscription('sub', 'acme', 'api', '2026-01-01 00:00+01');
SQL
  # What ingestion reads subscriptions through: a view until 0.2.0, the directory since 0.3.0.
  local subscriptions_read
  subscriptions_read=$(q pg_billing_update_roles -c "SELECT coalesce(to_regclass('billing._ingest_windows'), to_regclass('billing.subscription_directory'))")
  psql -X -q -d pg_billing_update_roles -v ON_ERROR_STOP=1 -v subscriptions_read="$subscriptions_read" >/dev/null <<'SQL'
CREATE ROLE billing_update_ingester;
CREATE ROLE billing_update_reader;
GRANT USAGE ON SCHEMA billing TO billing_update_ingester, billing_update_reader;
GRANT SELECT ON :subscriptions_read, billing.billable_metrics, billing.charges, billing.charge_filters TO billing_update_ingester;
GRANT SELECT, INSERT ON billing.events TO billing_update_ingester;
GRANT USAGE ON SEQUENCE billing.events_id_seq TO billing_update_ingester;
GRANT SELECT, INSERT, UPDATE ON billing.usage_rollups TO billing_update_ingester;
GRANT INSERT ON billing.rejected_events TO billing_update_ingester;
GRANT SELECT ON ALL TABLES IN SCHEMA billing TO billing_update_reader;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA billing TO billing_update_reader;
SQL
  q pg_billing_update_roles -c "ALTER EXTENSION pg_billing UPDATE" >/dev/null
  roles=$(psql -X -q -At -d pg_billing_update_roles 2>&1 <<'SQL' || true
SET ROLE billing_update_ingester;
SELECT billing.ingest_event('sub', 'tokens', 'by-role', '2026-03-05 10:00+00', '{"tokens": 2, "model": "small", "project": "p0"}');
SET ROLE billing_update_reader;
SELECT count(*) > 0 FROM billing.usage('sub', '2026-03-01 00:00+01', '2026-03-31 23:59:59.999999+02');
RESET ROLE;
DROP OWNED BY billing_update_ingester, billing_update_reader;
SQL
)
  psql -X -q -d postgres -c "DROP ROLE billing_update_ingester" -c "DROP ROLE billing_update_reader" >/dev/null
  [ "$roles" = "$(printf 'accepted\nt')" ] || fail "roles granted as the earlier release documents lost access: $(echo $roles)"
  psql -X -q -d postgres -c "DROP DATABASE pg_billing_update_roles" >/dev/null
  [ "$failures" -eq 0 ] || return 1
  echo "extension update: $previous -> $current keeps every row ($rows_before), usage and ingestion; schema equals a fresh install's ($(wc -l <"$work/fresh.txt") catalog lines)"
}

status=0
for release in $releases; do
  update_from "$release" || status=1
done
exit "$status"
