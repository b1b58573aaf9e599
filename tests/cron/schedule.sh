#!/usr/bin/env bash
# A real pg_cron job: in the database pg_cron runs jobs in (the test cluster's postgres
# database, cron.database_name), billing.schedule('* * * * *') creates pg_billing's jobs;
# a pending subscription whose start has come turns active when pg_cron runs the
# activation job (at the next minute); billing.unschedule() removes the jobs. Runs against
# the running test cluster (PGHOST/PGPORT), in about a minute.
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
SELECT billing.create_plan('api', 'API', 'monthly', 0, 'USD', '[]');
SELECT billing.create_subscription('cron-sub', 'cron-acme', 'api', now() + interval '2 seconds');
SQL
jobs=$(q -c "SELECT string_agg(job_name || ' | ' || schedule || ' | ' || command, '; ') FROM billing.schedule('* * * * *')")
[ "$jobs" = "pg_billing: activate subscriptions | * * * * * | SELECT billing.activate_subscriptions()" ] ||
  { echo "cron: billing.schedule() gave: $jobs"; exit 1; }
again=$(q -c "SELECT count(*) FROM billing.schedule('* * * * *')" -c "SELECT count(*) FROM cron.job WHERE jobname LIKE 'pg_billing:%'" | tr '\n' ' ')
[ "$again" = "1 1 " ] || { echo "cron: scheduling again did not replace the job: $again"; exit 1; }
[ "$(q -c "SELECT status FROM billing.subscriptions WHERE external_id = 'cron-sub'")" = pending ] ||
  { echo "cron: the subscription was not pending to begin with"; exit 1; }
status=pending
for _ in $(seq 1 80); do
  status=$(q -c "SELECT status FROM billing.subscriptions WHERE external_id = 'cron-sub'")
  [ "$status" = active ] && break
  sleep 1
done
[ "$status" = active ] || { echo "cron: pg_cron's job did not activate the subscription within 80 s"; q -c "SELECT status, return_message FROM cron.job_run_details" ; exit 1; }
runs=$(q -c "SELECT count(*) FROM cron.job_run_details d JOIN cron.job j USING (jobid) WHERE j.jobname = 'pg_billing: activate subscriptions' AND d.status = 'succeeded'")
removed=$(q -c "SELECT billing.unschedule()")
left=$(q -c "SELECT count(*) FROM cron.job WHERE jobname LIKE 'pg_billing:%'")
[ "$removed" = 1 ] && [ "$left" = 0 ] || { echo "cron: billing.unschedule() removed $removed, left $left"; exit 1; }
echo "cron: billing.schedule() created the activation job, pg_cron ran it ($runs succeeded run(s)) and the pending subscription turned active; billing.unschedule() removed it"
