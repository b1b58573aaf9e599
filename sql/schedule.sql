-- Scheduling with pg_cron: the jobs that keep pg_billing's periodic work running, each
-- under a name of its own, so that scheduling again replaces them and unscheduling finds
-- them. pg_cron runs a job in the database it was scheduled from, as the role that
-- scheduled it.

-- The jobs, in one place: their names and commands.
CREATE FUNCTION billing._scheduled_jobs() RETURNS TABLE (job_name text, command text)
LANGUAGE sql IMMUTABLE AS $$
    VALUES ('pg_billing: activate subscriptions', 'SELECT billing.activate_subscriptions()'),
           ('pg_billing: billing run', 'CALL billing.run_billing()'),
           ('pg_billing: finalize drafts', 'CALL billing.finalize_drafts()')
$$;

-- Raises 55000 unless pg_cron is installed in this database.
CREATE FUNCTION billing._require_pg_cron() RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        PERFORM billing._raise('55000', 'pg_cron is not installed in this database',
            'billing.schedule() and billing.unschedule() manage pg_cron jobs',
            'preload pg_cron (shared_preload_libraries = ''pg_cron'') with cron.database_name set to this database, CREATE EXTENSION pg_cron here, then call it again');
    END IF;
END $$;

CREATE FUNCTION billing.schedule(billing_cron text DEFAULT '5 * * * *')
RETURNS TABLE (job_name text, schedule text, command text)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    job record;
BEGIN
    PERFORM billing._require_pg_cron();
    FOR job IN SELECT j.job_name, j.command FROM billing._scheduled_jobs() j LOOP
        PERFORM cron.schedule(job.job_name, billing_cron, job.command);
        job_name := job.job_name; schedule := billing_cron; command := job.command;
        RETURN NEXT;
    END LOOP;
END $$;

CREATE FUNCTION billing.unschedule() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    removed integer := 0;
    name text;
BEGIN
    PERFORM billing._require_pg_cron();
    FOR name IN SELECT j.jobname FROM cron.job j JOIN billing._scheduled_jobs() s ON s.job_name = j.jobname LOOP
        PERFORM cron.unschedule(name);
        removed := removed + 1;
    END LOOP;
    RETURN removed;
END $$;

REVOKE ALL ON FUNCTION billing._scheduled_jobs(), billing._require_pg_cron(), billing.schedule(text), billing.unschedule() FROM PUBLIC;
