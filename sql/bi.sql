-- Roles and the BI schema. Three group roles (NOLOGIN; grant them to login roles):
-- billing_admin runs the catalog and reads everything, billing_writer ingests and nothing
-- else, billing_reader sees the views of schema billing_bi and nothing else. Roles belong
-- to the cluster, not to a database: the first CREATE EXTENSION creates them, later ones
-- (in other databases) find them there.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['billing_admin', 'billing_writer', 'billing_reader'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        END IF;
    END LOOP;
END $$;
COMMENT ON ROLE billing_admin IS 'pg_billing: the catalog, usage and every table of schema billing (grant it to login roles).';
COMMENT ON ROLE billing_writer IS 'pg_billing: ingestion only (single events, JSON batches, COPY into the intake, staged COPY).';
COMMENT ON ROLE billing_reader IS 'pg_billing: the views of schema billing_bi, nothing else.';

-- Views for BI tools: plain typed columns (enum words as text, money as numeric), stable
-- names, one row per thing a report counts. They read the tables with their owner's rights,
-- so billing_reader needs nothing of schema billing.
CREATE SCHEMA billing_bi;

CREATE VIEW billing_bi.customers AS
SELECT c.external_id AS customer_external_id, c.name, c.email, c.currency, c.timezone,
       e.code AS billing_entity_code, c.created_at
FROM billing.customers c JOIN billing.billing_entities e ON e.id = c.billing_entity_id;

CREATE VIEW billing_bi.subscriptions AS
SELECT s.external_id AS subscription_external_id, c.external_id AS customer_external_id, p.code AS plan_code,
       v.version AS plan_version, v.interval::text AS billing_interval, v.amount AS plan_amount, v.currency,
       s.status::text AS status, s.billing_time::text AS billing_time, s.subscription_at, s.started_at, s.terminated_at
FROM billing.subscriptions s
JOIN billing.customers c ON c.id = s.customer_id
JOIN billing.plan_versions v ON v.id = s.plan_version_id
JOIN billing.plans p ON p.id = v.plan_id;

-- Usage per customer-local day, subscription and metric, from the day rollups (all
-- dimension sets and writer slots together).
CREATE VIEW billing_bi.usage_by_day AS
SELECT r.day, c.external_id AS customer_external_id, s.external_id AS subscription_external_id,
       m.code AS metric_code, m.aggregation::text AS aggregation,
       sum(r.events_count)::bigint AS events, sum(r.value_sum) AS value_sum, max(r.value_max) AS value_max
FROM billing.usage_rollups r
JOIN billing.subscriptions s ON s.customer_id = r.customer_id AND s.id = r.subscription_id
JOIN billing.customers c ON c.id = r.customer_id
JOIN billing.billable_metrics m ON m.id = r.billable_metric_id
GROUP BY r.day, c.external_id, s.external_id, m.code, m.aggregation;

-- What ingestion did with every event sent, per UTC day of ingestion: the events stored
-- (per metric) and the rejects (per metric code as sent, SQLSTATE and reason), so that
-- nothing sent goes uncounted. Duplicates of stored events are not stored again and are
-- not counted here.
CREATE VIEW billing_bi.ingestion_health AS
SELECT (e.ingested_at AT TIME ZONE 'UTC')::date AS day, m.code AS metric_code, 'accepted'::text AS outcome,
       NULL::text AS sqlstate, NULL::text AS reason, count(*)::bigint AS events
FROM billing.events e JOIN billing.billable_metrics m ON m.id = e.billable_metric_id
GROUP BY 1, 2
UNION ALL
SELECT (r.rejected_at AT TIME ZONE 'UTC')::date, r.code, 'rejected', r.sqlstate, r.reason, count(*)::bigint
FROM billing.rejected_events r
GROUP BY 1, 2, 4, 5;

GRANT USAGE ON SCHEMA billing_bi TO billing_reader, billing_admin;
GRANT SELECT ON billing_bi.customers, billing_bi.subscriptions, billing_bi.usage_by_day, billing_bi.ingestion_health
    TO billing_reader, billing_admin;

-- The writer: exactly what ingestion needs (docs/ingestion.md, Privileges), through every
-- path: single events, JSON batches, COPY into the intake, staged COPY.
GRANT USAGE ON SCHEMA billing TO billing_writer;
GRANT SELECT ON billing.subscription_directory, billing.billable_metrics, billing.charges, billing.charge_filters TO billing_writer;
GRANT SELECT, INSERT ON billing.events TO billing_writer;
GRANT USAGE ON SEQUENCE billing.events_id_seq TO billing_writer;
GRANT SELECT, INSERT, UPDATE ON billing.usage_rollups TO billing_writer;
GRANT INSERT ON billing.rejected_events, billing.event_intake TO billing_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON billing.event_staging TO billing_writer;
GRANT EXECUTE ON FUNCTION billing.ingest_event(text, text, text, timestamptz, jsonb, numeric), billing.ingest_events(jsonb),
    billing.ingest_staged(integer), billing.last_intake(), billing.direct_write_status() TO billing_writer;

-- The admin: the catalog, usage and every table of schema billing (not billing.distribute(),
-- which stays with superusers).
GRANT USAGE ON SCHEMA billing TO billing_admin;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES ON ALL TABLES IN SCHEMA billing TO billing_admin;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA billing TO billing_admin;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA billing TO billing_admin;
REVOKE EXECUTE ON FUNCTION billing.distribute(integer) FROM billing_admin;
