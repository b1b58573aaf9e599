#!/usr/bin/env bash
# A real pg_cron job: in the database pg_cron runs jobs in (the test cluster's postgres
# database, cron.database_name), billing.schedule('* * * * *') creates pg_billing's jobs;
# at the next minute pg_cron runs them: a pending subscription whose start has come turns
# active, and the billing run gives it its first invoice (its plan is paid in advance);
# billing.unschedule() removes the jobs. Runs against the running test cluster
# (PGHOST/PGPORT), in about a minute.
set -euo pipefail
export PGOPTIONS="-c client_min_messages=warning"
q() { psql -X -q -At -v ON_ERROR_STOP=1 -d postgres "$@"; }
cleanup() { q -c "DROP EXTENSION IF EXISTS pg_billing CASCADE" -c "DROP EXTENSION IF EXISTS pg_cron" >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup
q >/dev/null <<'SQL'
CREATE EXTENSION pg_cron;
CREATE EXTENSION pg_billing;
SELECT billing.create_customer('cron-acme', 'Acme', 'USD', 'UTC');
SELECT billing.create_billable_metric('calls', 'Calls', 'count');
SELECT billing.create_plan('api', 'API', 'monthly', 10, 'USD', '[]', pay_in_advance => true);
-- Anniversary billing: the first period is billed in full (10.00), whatever today is.
SELECT billing.create_subscription('cron-sub', 'cron-acme', 'api', now() + interval '2 seconds', billing_time => 'anniversary');
SQL
jobs=$(q -c "SELECT string_agg(job_name || ' | ' || schedule || ' | ' || command, '; ' ORDER BY job_name) FROM billing.schedule('* * * * *')")
[ "$jobs" = "pg_billing: activate subscriptions | * * * * * | SELECT billing.activate_subscriptions(); pg_billing: billing run | * * * * * | CALL billing.run_billing(); pg_billing: finalize drafts | * * * * * | CALL billing.finalize_drafts()" ] ||
  { echo "cron: billing.schedule() gave: $jobs"; exit 1; }
again=$(q -c "SELECT count(*) FROM billing.schedule('* * * * *')" -c "SELECT count(*) FROM cron.job WHERE jobname LIKE 'pg_billing:%'" | tr '\n' ' ')
[ "$again" = "3 3 " ] || { echo "cron: scheduling again did not replace the job: $again"; exit 1; }
[ "$(q -c "SELECT status FROM billing.subscriptions WHERE external_id = 'cron-sub'")" = pending ] ||
  { echo "cron: the subscription was not pending to begin with"; exit 1; }
invoice=
for _ in $(seq 1 80); do
  invoice=$(q -c "SELECT i.status || ' ' || i.total_amount FROM billing.invoices i JOIN billing.subscriptions s ON s.customer_id = i.customer_id AND s.id = i.subscription_id WHERE s.external_id = 'cron-sub' AND s.status = 'active'")
  [ -n "$invoice" ] && break
  sleep 1
done
[ "$invoice" = "finalized 10.00" ] || { echo "cron: no finalized invoice of 10.00 within 80 s (got '$invoice')"; q -c "SELECT jobid, status, return_message FROM cron.job_run_details"; exit 1; }
runs=$(q -c "SELECT count(*) FROM cron.job_run_details d JOIN cron.job j USING (jobid) WHERE j.jobname = 'pg_billing: billing run' AND d.status = 'succeeded'")
removed=$(q -c "SELECT billing.unschedule()")
left=$(q -c "SELECT count(*) FROM cron.job WHERE jobname LIKE 'pg_billing:%'")
[ "$removed" = 3 ] && [ "$left" = 0 ] || { echo "cron: billing.unschedule() removed $removed, left $left"; exit 1; }
echo "cron: billing.schedule() created pg_billing's 3 jobs; pg_cron ran the billing run ($runs succeeded run(s)): the pending subscription turned active and got its invoice ($invoice); billing.unschedule() removed the jobs"
