#!/usr/bin/env bash
# Crash safety of the billing run: kill -9 the server while CALL billing.run_billing() bills
# 500 subscriptions, restart, check that what was committed is whole, rerun, and compare the
# invoices and fees row by row with an uncrashed run of the same scenario. Runs against the
# test cluster started by scripts/env.sh (PG_CLUSTER_DIR).
set -euo pipefail
export PGOPTIONS="-c client_min_messages=warning"
source "$(dirname "$0")/../../scripts/env.sh"
scenario="$(dirname "$0")/billing_scenario.sql"
as_of="2026-04-01 00:05+00"
# Everything billed, without the ids and instants of the run itself.
billed_rows() {
  psql -X -q -At -v ON_ERROR_STOP=1 -d "$1" <<'SQL'
SELECT s.external_id, i.billing_at, i.status, i.number, i.fees_amount, i.total_amount,
       (SELECT string_agg(format('%s=%s/%s/%s', f.fee_key, f.units, f.precise_amount, f.amount), ' ' ORDER BY f.fee_key)
        FROM billing.fees f WHERE f.customer_id = i.customer_id AND f.invoice_id = i.id)
FROM billing.invoices i JOIN billing.subscriptions s ON s.customer_id = i.customer_id AND s.id = i.subscription_id
ORDER BY s.external_id, i.billing_at;
SQL
}
for db in pg_billing_crash_reference pg_billing_crash_billing; do
  psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
  psql -X -q -v ON_ERROR_STOP=1 -o /dev/null -d "$db" -f "$scenario"
done
psql -X -q -v ON_ERROR_STOP=1 -d pg_billing_crash_reference -c "CALL billing.run_billing('$as_of')"
billed_rows pg_billing_crash_reference > /tmp/pg_billing_crash_reference.txt

psql -X -q -d pg_billing_crash_billing -c "CALL billing.run_billing('$as_of')" >/dev/null 2>&1 &
run=$!
# Kill once some subscriptions are billed and the run is still going.
for _ in $(seq 1 600); do
  billed=$(psql -X -q -At -d pg_billing_crash_billing -c "SELECT count(*) FROM billing.invoices" 2>/dev/null || echo 0)
  [ "$billed" -ge 40 ] && break
  sleep 0.05
done
echo "killing the server with $billed invoices billed"
crash_server "$PG_CLUSTER_DIR"
wait "$run" || true
read -r before_rerun partial < <(psql -X -q -At -F ' ' -v ON_ERROR_STOP=1 -d pg_billing_crash_billing <<'SQL'
-- Every invoice that survived is whole: its totals are the sum of its fees.
SELECT count(*), count(*) FILTER (WHERE i.fees_amount <> (SELECT coalesce(sum(f.amount), 0) FROM billing.fees f
                                                          WHERE f.customer_id = i.customer_id AND f.invoice_id = i.id))
FROM billing.invoices i;
SQL
)
psql -X -q -v ON_ERROR_STOP=1 -d pg_billing_crash_billing -c "CALL billing.run_billing('$as_of')"
billed_rows pg_billing_crash_billing > /tmp/pg_billing_crash_billing.txt
reference=$(wc -l < /tmp/pg_billing_crash_reference.txt)
echo "after kill -9: $before_rerun invoices committed ($partial partial), $reference after the rerun"
if [ "$before_rerun" -eq 0 ] || [ "$before_rerun" -ge "$reference" ] || [ "$partial" -ne 0 ] \
   || ! diff /tmp/pg_billing_crash_reference.txt /tmp/pg_billing_crash_billing.txt >/dev/null; then
  diff /tmp/pg_billing_crash_reference.txt /tmp/pg_billing_crash_billing.txt | head -20 || true
  echo "billing run crash safety violated (or the kill came before the first or after the last subscription)"; exit 1
fi
psql -X -q -d postgres -c "DROP DATABASE pg_billing_crash_reference" -c "DROP DATABASE pg_billing_crash_billing"
echo "crash: a billing run killed after $before_rerun invoices and rerun gave the same $reference invoices, row by row"
