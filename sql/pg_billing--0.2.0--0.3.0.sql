-- pg_billing 0.2.0 → 0.3.0. Every schema change after the 0.2.0 release is added here, in
-- the order it was made, until 0.3.0 is released; from then on this file is frozen too and
-- the next version gets its own. Test tier 9 checks that a database upgraded through it (and
-- through every earlier script, from each earlier release) has exactly the schema of a
-- fresh 0.3.0 install.
\echo Use "ALTER EXTENSION pg_billing UPDATE TO '0.3.0'" to load this file. \quit

-- Keys that distribute by customer: subscriptions are keyed by (customer, id) and unique by
-- (customer, external id); external ids are unique across customers through two
-- directories, from which ingestion and the usage functions route by customer.
-- Which customer an external customer id names: the one place that id is unique.
CREATE TABLE billing.customer_directory (
    external_id text PRIMARY KEY,
    customer_id bigint NOT NULL UNIQUE
);

-- Which customer and subscription an external subscription id names (the one place that
-- id is unique), with what ingestion checks an event against: the customer's time zone
-- and the active window, from the start (a pending subscription accepts events from its
-- subscription_at on, whether or not billing.activate_subscriptions() has flipped its
-- status yet) to the termination. Ingestion reads only this table and the catalog, so on
-- Citus it routes each event to its customer's shard without asking every shard. The
-- functions that create and terminate subscriptions keep it in step with them.
CREATE TABLE billing.subscription_directory (
    external_id text PRIMARY KEY,
    customer_id bigint NOT NULL,
    subscription_id bigint NOT NULL,
    plan_version_id bigint NOT NULL,
    timezone text NOT NULL,
    active_from timestamptz NOT NULL,
    active_until timestamptz,
    UNIQUE (customer_id, subscription_id)
);
INSERT INTO billing.customer_directory (external_id, customer_id) SELECT c.external_id, c.id FROM billing.customers c;
INSERT INTO billing.subscription_directory (external_id, customer_id, subscription_id, plan_version_id, timezone, active_from, active_until)
SELECT s.external_id, s.customer_id, s.id, s.plan_version_id, c.timezone, coalesce(s.started_at, s.subscription_at), s.terminated_at
FROM billing.subscriptions s JOIN billing.customers c ON c.id = s.customer_id;
ALTER TABLE billing.customers DROP CONSTRAINT customers_external_id_key;
DROP INDEX billing.subscriptions_customer_id_idx;
ALTER TABLE billing.subscriptions
    DROP CONSTRAINT subscriptions_external_id_key,
    DROP CONSTRAINT subscriptions_pkey,
    ADD PRIMARY KEY (customer_id, id),
    ADD UNIQUE (customer_id, external_id);
SELECT pg_catalog.pg_extension_config_dump('billing.customer_directory', '');
SELECT pg_catalog.pg_extension_config_dump('billing.subscription_directory', '');

-- Ingestion reads the directory instead of a view over subscriptions and customers; the
-- catalog cache's invalidation follows it.
-- Roles keep what they could read: who read the view (ingesting roles) or the subscriptions
-- (readers of usage) may read the subscription directory, and who read the customers or
-- the subscriptions may read the customer directory.
DO $$
DECLARE
    grant_to record;
BEGIN
    FOR grant_to IN
        SELECT DISTINCT d.directory, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS role
        FROM (VALUES ('billing._ingest_windows', 'billing.subscription_directory'),
                     ('billing.subscriptions', 'billing.subscription_directory'),
                     ('billing.subscriptions', 'billing.customer_directory'),
                     ('billing.customers', 'billing.customer_directory')) d(source, directory)
        JOIN pg_catalog.pg_class c ON c.oid = d.source::regclass
        CROSS JOIN LATERAL aclexplode(c.relacl) a
        LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
        WHERE a.privilege_type = 'SELECT' AND a.grantee <> c.relowner
    LOOP
        EXECUTE format('GRANT SELECT ON %s TO %s', grant_to.directory, grant_to.role);
    END LOOP;
END $$;
DROP VIEW billing._ingest_windows;
DROP TRIGGER catalog_changed ON billing.customers;
DROP TRIGGER catalog_changed ON billing.subscriptions;
CREATE TRIGGER catalog_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON billing.subscription_directory
    FOR EACH STATEMENT EXECUTE FUNCTION billing._catalog_changed();
ALTER TABLE billing.subscription_directory ENABLE ALWAYS TRIGGER catalog_changed;

-- Every read of per-customer rows names the customer (one shard group on Citus).

CREATE FUNCTION billing._metric_units(
    customer_id bigint, subscription_id bigint, metric billing.billable_metrics, from_ts timestamptz, to_ts timestamptz, timezone text
) RETURNS TABLE (dims jsonb, units numeric, events_count bigint)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    from_day date := (from_ts AT TIME ZONE timezone)::date;
    to_day date := (to_ts AT TIME ZONE timezone)::date;
    end_excl timestamptz := to_ts + interval '1 microsecond';
    end_aligned boolean := end_excl = ((to_day + 1)::timestamp AT TIME ZONE timezone);
    aligned boolean := from_ts = (from_day::timestamp AT TIME ZONE timezone) AND end_aligned;
    window_start timestamptz := CASE WHEN metric.recurring THEN '-infinity'::timestamptz ELSE from_ts END;
    first_day date := billing._stored_day(window_start, -2);
    last_day date := billing._stored_day(to_ts, 2);
BEGIN
    IF metric.aggregation = 'unique_count' THEN
        RETURN QUERY
        SELECT c.dims, sum(c.contribution)::numeric, count(*)
        FROM (SELECT e.dims,
                     CASE WHEN e.op = lag(e.op) OVER w THEN 0
                          WHEN e.op = 'add' THEN 1
                          WHEN lag(e.op) OVER w = 'add' THEN -1
                          ELSE 0 END AS contribution
              FROM (SELECT ev.dims, ev.properties ->> metric.field_name AS member,
                           coalesce(ev.properties ->> 'operation_type', 'add') AS op, ev."timestamp", ev.id
                    FROM billing.events ev
                    WHERE ev.customer_id = _metric_units.customer_id AND ev.subscription_id = _metric_units.subscription_id AND ev.billable_metric_id = metric.id
                      AND ev.local_day BETWEEN first_day AND last_day
                      AND ev."timestamp" BETWEEN window_start AND to_ts) e
              WINDOW w AS (PARTITION BY e.dims, e.member ORDER BY e."timestamp", e.id)) c
        GROUP BY c.dims;
    ELSIF metric.aggregation = 'weighted_sum' THEN
        RETURN QUERY
        WITH points AS (
            SELECT ev.dims, from_ts AS at, ev.value AS delta, 0 AS counted
            FROM billing.events ev
            WHERE metric.recurring AND ev.customer_id = _metric_units.customer_id AND ev.subscription_id = _metric_units.subscription_id
              AND ev.billable_metric_id = metric.id AND ev.local_day <= last_day AND ev."timestamp" < from_ts
            UNION ALL
            SELECT ev.dims, ev."timestamp", ev.value, 1
            FROM billing.events ev
            WHERE ev.customer_id = _metric_units.customer_id AND ev.subscription_id = _metric_units.subscription_id AND ev.billable_metric_id = metric.id
              AND ev.local_day BETWEEN first_day AND last_day AND ev."timestamp" BETWEEN from_ts AND to_ts
        ), steps AS (
            SELECT p.dims, p.at, sum(p.delta) AS delta, sum(p.counted) AS counted FROM points p GROUP BY p.dims, p.at
        ), levels AS (
            SELECT s.dims, s.counted, sum(s.delta) OVER w AS level, lead(s.at, 1, end_excl) OVER w - s.at AS lasted
            FROM steps s WINDOW w AS (PARTITION BY s.dims ORDER BY s.at)
        )
        SELECT l.dims, sum(l.level * extract(epoch FROM l.lasted)) / extract(epoch FROM end_excl - from_ts), sum(l.counted)::bigint
        FROM levels l GROUP BY l.dims;
    ELSIF aligned OR (metric.recurring AND end_aligned) THEN
        RETURN QUERY
        SELECT r.dims,
               CASE metric.aggregation
                   WHEN 'count' THEN sum(r.events_count)::numeric
                   WHEN 'sum' THEN sum(r.value_sum)
                   WHEN 'max' THEN coalesce(max(r.value_max), 0)
                   ELSE greatest((array_agg(r.latest_value ORDER BY r.latest_at DESC, r.latest_event_id DESC))[1], 0)
               END,
               sum(r.events_count)::bigint
        FROM billing.usage_rollups r
        WHERE r.customer_id = _metric_units.customer_id AND r.subscription_id = _metric_units.subscription_id AND r.billable_metric_id = metric.id
          AND r.day <= to_day AND (metric.recurring OR r.day >= from_day)
        GROUP BY r.dims;
    ELSE
        RETURN QUERY
        SELECT ev.dims,
               CASE metric.aggregation
                   WHEN 'count' THEN count(*)::numeric
                   WHEN 'sum' THEN coalesce(sum(ev.value), 0)
                   WHEN 'max' THEN coalesce(max(ev.value), 0)
                   ELSE greatest((array_agg(ev.value ORDER BY ev."timestamp" DESC, ev.id DESC))[1], 0)
               END,
               count(*)
        FROM billing.events ev
        WHERE ev.customer_id = _metric_units.customer_id AND ev.subscription_id = _metric_units.subscription_id AND ev.billable_metric_id = metric.id
          AND ev.local_day BETWEEN first_day AND last_day AND ev."timestamp" BETWEEN window_start AND to_ts
        GROUP BY ev.dims;
    END IF;
END $$;
CREATE FUNCTION billing._metric_day_units(
    customer_id bigint, subscription_id bigint, metric billing.billable_metrics, from_ts timestamptz, to_ts timestamptz, timezone text
) RETURNS TABLE (dims jsonb, day_units numeric, events_count bigint)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    from_day date := (from_ts AT TIME ZONE timezone)::date;
    to_day date := (to_ts AT TIME ZONE timezone)::date;
    end_aligned boolean := to_ts + interval '1 microsecond' = ((to_day + 1)::timestamp AT TIME ZONE timezone);
    last_day date := billing._stored_day(to_ts, 2);
BEGIN
    IF metric.aggregation = 'unique_count' THEN
        RETURN QUERY
        WITH ev AS (
            SELECT e.dims, e.properties ->> metric.field_name AS member,
                   coalesce(e.properties ->> 'operation_type', 'add') AS op, e."timestamp", e.id,
                   (e."timestamp" AT TIME ZONE timezone)::date AS day
            FROM billing.events e
            WHERE e.customer_id = _metric_day_units.customer_id AND e.subscription_id = _metric_day_units.subscription_id AND e.billable_metric_id = metric.id
              AND e.local_day <= last_day AND e."timestamp" <= to_ts
        ), changes AS (
            -- The events that change a member's state (as billing._metric_units counts them).
            SELECT c.* FROM (
                SELECT e.*, (e.op = 'add' AND lag(e.op) OVER w IS DISTINCT FROM 'add')
                            OR (e.op = 'remove' AND lag(e.op) OVER w = 'add') AS changed
                FROM ev e WINDOW w AS (PARTITION BY e.dims, e.member ORDER BY e."timestamp", e.id)) c
            WHERE c.changed
        ), spans AS (
            SELECT c.dims, c.op, c.day AS added,
                   lead(c.day) OVER (PARTITION BY c.dims, c.member ORDER BY c."timestamp", c.id) AS removed
            FROM changes c
        ), active AS (
            SELECT s.dims, sum(greatest(0, least(coalesce(s.removed, to_day), to_day) - greatest(s.added, from_day) + 1)) AS days
            FROM spans s WHERE s.op = 'add' GROUP BY s.dims
        )
        SELECT n.dims, coalesce(a.days, 0)::numeric, n.events_count
        FROM (SELECT e.dims, count(*) AS events_count FROM ev e GROUP BY e.dims) n
        LEFT JOIN active a ON a.dims = n.dims;
    ELSIF end_aligned THEN
        RETURN QUERY
        SELECT r.dims, sum(r.value_sum * (to_day - greatest(r.day, from_day) + 1)), sum(r.events_count)::bigint
        FROM billing.usage_rollups r
        WHERE r.customer_id = _metric_day_units.customer_id AND r.subscription_id = _metric_day_units.subscription_id AND r.billable_metric_id = metric.id AND r.day <= to_day
        GROUP BY r.dims;
    ELSE
        RETURN QUERY
        SELECT e.dims, coalesce(sum(e.value * (to_day - greatest((e."timestamp" AT TIME ZONE timezone)::date, from_day) + 1)), 0),
               count(*)
        FROM billing.events e
        WHERE e.customer_id = _metric_day_units.customer_id AND e.subscription_id = _metric_day_units.subscription_id AND e.billable_metric_id = metric.id
          AND e.local_day <= last_day AND e."timestamp" <= to_ts
        GROUP BY e.dims;
    END IF;
END $$;
CREATE FUNCTION billing._metric_event_values(
    customer_id bigint, subscription_id bigint, metric_id bigint, from_ts timestamptz, to_ts timestamptz, dynamic boolean
) RETURNS TABLE (dims jsonb, event_values numeric[])
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
BEGIN
    RETURN QUERY
    SELECT ev.dims, array_agg(CASE WHEN dynamic THEN coalesce(ev.precise_total_amount_cents, 0) ELSE coalesce(ev.value, 1) END
                              ORDER BY ev."timestamp", ev.id)
    FROM billing.events ev
    WHERE ev.customer_id = _metric_event_values.customer_id AND ev.subscription_id = _metric_event_values.subscription_id
      AND ev.billable_metric_id = metric_id
      AND ev.local_day BETWEEN billing._stored_day(from_ts, -2) AND billing._stored_day(to_ts, 2)
      AND ev."timestamp" BETWEEN from_ts AND to_ts
    GROUP BY ev.dims;
END $$;
REVOKE ALL ON FUNCTION billing._metric_units(bigint, bigint, billing.billable_metrics, timestamptz, timestamptz, text),
    billing._metric_day_units(bigint, bigint, billing.billable_metrics, timestamptz, timestamptz, text),
    billing._metric_event_values(bigint, bigint, bigint, timestamptz, timestamptz, boolean) FROM PUBLIC;
-- The group of a charge with pricing group keys: each key's value, null when missing ({}
-- without keys). A table function, joined LATERAL, so that the planner inlines it into the
-- usage query instead of calling a SQL function for each of 20,000 groups. One key, the
-- usual case, is built directly: the same object as the aggregate gives, at a fraction of
-- its cost.
CREATE FUNCTION billing._group_of(keys text[], dims jsonb) RETURNS TABLE (grouped_by jsonb)
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN cardinality(keys) = 1 THEN jsonb_build_object(keys[1], coalesce(dims -> keys[1], 'null'::jsonb))
                ELSE (SELECT coalesce(jsonb_object_agg(k, coalesce(dims -> k, 'null'::jsonb)), '{}'::jsonb) FROM unnest(keys) k)
           END
$$;
REVOKE ALL ON FUNCTION billing._group_of(text[], jsonb) FROM PUBLIC;
-- Roles that could run the old forms (a reader granted EXECUTE ON ALL FUNCTIONS, which
-- billing.usage needs) may run the new ones.
DO $$
DECLARE
    grant_to record;
BEGIN
    FOR grant_to IN
        SELECT DISTINCT d.new_form, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS role
        FROM (VALUES ('billing._metric_units(bigint, billing.billable_metrics, timestamptz, timestamptz, text)',
                      'billing._metric_units(bigint, bigint, billing.billable_metrics, timestamptz, timestamptz, text)'),
                     ('billing._metric_day_units(bigint, billing.billable_metrics, timestamptz, timestamptz, text)',
                      'billing._metric_day_units(bigint, bigint, billing.billable_metrics, timestamptz, timestamptz, text)'),
                     ('billing._metric_event_values(bigint, bigint, timestamptz, timestamptz, boolean)',
                      'billing._metric_event_values(bigint, bigint, bigint, timestamptz, timestamptz, boolean)'),
                     ('billing._group_key(text[], jsonb)', 'billing._group_of(text[], jsonb)')) d(old_form, new_form)
        JOIN pg_catalog.pg_proc p ON p.oid = d.old_form::regprocedure
        CROSS JOIN LATERAL aclexplode(p.proacl) a
        LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
        WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', grant_to.new_form, grant_to.role);
    END LOOP;
END $$;
DROP FUNCTION billing._metric_units(bigint, billing.billable_metrics, timestamptz, timestamptz, text);
DROP FUNCTION billing._metric_day_units(bigint, billing.billable_metrics, timestamptz, timestamptz, text);
DROP FUNCTION billing._metric_event_values(bigint, bigint, timestamptz, timestamptz, boolean);
DROP FUNCTION billing._group_key(text[], jsonb);

CREATE OR REPLACE FUNCTION billing._subscription(external_id text) RETURNS billing.subscriptions
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    entry billing.subscription_directory;
    found_subscription billing.subscriptions;
BEGIN
    SELECT * INTO entry FROM billing.subscription_directory d WHERE d.external_id = external_id;
    SELECT * INTO found_subscription FROM billing.subscriptions s
    WHERE s.customer_id = entry.customer_id AND s.id = entry.subscription_id;
    IF NOT FOUND THEN
        PERFORM billing._unknown('subscription', external_id, 'check the external_subscription_id');
    END IF;
    RETURN found_subscription;
END $$;
CREATE OR REPLACE FUNCTION billing._usage(
    sub billing.subscriptions, cust billing.customers, window_from timestamptz, window_to timestamptz
) RETURNS SETOF billing.usage_line
SET plan_cache_mode = auto
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    ch billing.charges;
    metric billing.billable_metrics;
    model text;
    period_days integer;
    -- Whether the charge has filters: without them every usage row is in the default
    -- bucket, and 20,000 groups' filter lookups are skipped.
    filtered boolean;
    -- The charge's price, parsed once for all its lines (the filters' in the query below).
    charge_price billing.price;
BEGIN
    -- Prorated charges weigh units by the days of the billing period that holds window_from.
    IF EXISTS (SELECT 1 FROM billing.charges c WHERE c.plan_version_id = sub.plan_version_id AND c.prorated) THEN
        SELECT pb.days INTO period_days FROM billing.period_bounds(
            (SELECT v.interval::text FROM billing.plan_versions v WHERE v.id = sub.plan_version_id), sub.billing_time::text,
            (coalesce(sub.started_at, sub.subscription_at) AT TIME ZONE cust.timezone)::date, window_from, cust.timezone) pb;
    END IF;
    FOR ch IN SELECT * FROM billing.charges c WHERE c.plan_version_id = sub.plan_version_id ORDER BY c.position LOOP
        SELECT * INTO metric FROM billing.billable_metrics m WHERE m.id = ch.billable_metric_id;
        model := ch.price ->> 'charge_model';
        charge_price := ch.price::billing.price;
        filtered := EXISTS (SELECT 1 FROM billing.charge_filters cf WHERE cf.charge_id = ch.id);
        RETURN QUERY
        WITH filters AS MATERIALIZED (
            SELECT cf.id, cf."values", cf.price::billing.price AS price FROM billing.charge_filters cf WHERE cf.charge_id = ch.id
        ), per_dims AS (
            SELECT u.dims, u.units, u.events_count, CASE WHEN filtered THEN billing._charge_filter(ch.id, u.dims) END AS filter_id,
                   g.grouped_by
            FROM billing._metric_units(sub.customer_id, sub.id, metric, window_from, window_to, cust.timezone) u
            CROSS JOIN LATERAL billing._group_of(ch.pricing_group_keys, u.dims) g
            WHERE NOT ch.prorated
            UNION ALL
            SELECT u.dims, u.day_units, u.events_count, CASE WHEN filtered THEN billing._charge_filter(ch.id, u.dims) END,
                   g.grouped_by
            FROM billing._metric_day_units(sub.customer_id, sub.id, metric, window_from, window_to, cust.timezone) u
            CROSS JOIN LATERAL billing._group_of(ch.pricing_group_keys, u.dims) g
            WHERE ch.prorated
        ), buckets AS (
            SELECT p.filter_id, p.grouped_by, sum(p.units) AS units, sum(p.events_count)::bigint AS events_count
            FROM per_dims p GROUP BY p.filter_id, p.grouped_by
            UNION ALL
            -- Every filter and the default bucket appear, with zero usage when nothing matched.
            SELECT f.id, '{}'::jsonb, 0, 0 FROM (SELECT fs.id FROM filters fs UNION ALL SELECT NULL) f
            WHERE NOT EXISTS (SELECT 1 FROM per_dims p WHERE p.filter_id IS NOT DISTINCT FROM f.id)
        ), values_per_bucket AS (
            SELECT CASE WHEN filtered THEN billing._charge_filter(ch.id, v.dims) END AS filter_id, g.grouped_by,
                   array_agg(x ORDER BY v.ord, x.ord) AS event_values
            FROM (SELECT ev.*, row_number() OVER () AS ord
                  FROM billing._metric_event_values(sub.customer_id, sub.id, metric.id, CASE WHEN metric.recurring THEN '-infinity' ELSE window_from END,
                                                    window_to, model = 'dynamic') ev
                  WHERE model IN ('percentage', 'dynamic')) v,
                 unnest(v.event_values) WITH ORDINALITY x(x, ord),
                 billing._group_of(ch.pricing_group_keys, v.dims) g
            GROUP BY 1, 2
        )
        SELECT ch.id, metric.code, metric.aggregation::text, model, b.filter_id, f."values", b.grouped_by,
               trim_scale(r.units), b.events_count,
               CASE WHEN model IN ('percentage', 'dynamic')
                    THEN billing.amount(coalesce(f.price, charge_price), coalesce(vb.event_values, '{}'), cust.currency)
                    ELSE billing.amount(coalesce(f.price, charge_price), r.units) END,
               cust.currency, window_from, window_to
        FROM buckets b
        CROSS JOIN LATERAL (SELECT billing._round_units(CASE WHEN ch.prorated THEN billing._prorate(b.units, period_days) ELSE b.units END,
                                                        metric.rounding_function::text, metric.rounding_precision) AS units) r
        LEFT JOIN filters f ON f.id = b.filter_id
        LEFT JOIN values_per_bucket vb ON vb.filter_id IS NOT DISTINCT FROM b.filter_id AND vb.grouped_by = b.grouped_by
        -- Groups in the byte order of their JSON text: the same on every database whatever
        -- its collation, and a third of the cost of ordering the jsonb values.
        ORDER BY b.filter_id NULLS FIRST, b.grouped_by::text COLLATE "C";
    END LOOP;
END $$;
CREATE OR REPLACE FUNCTION billing.usage(external_subscription_id text, window_from timestamptz, window_to timestamptz)
RETURNS SETOF billing.usage_line
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    sub billing.subscriptions;
    cust billing.customers;
BEGIN
    sub := billing._subscription(external_subscription_id);
    IF window_from > window_to THEN
        PERFORM billing._invalid('window_from is after window_to', format('got %s and %s', window_from, window_to),
            'give the window''s first and last instant');
    END IF;
    SELECT * INTO cust FROM billing.customers c WHERE c.id = sub.customer_id;
    RETURN QUERY SELECT * FROM billing._usage(sub, cust, window_from, window_to);
END $$;
CREATE OR REPLACE FUNCTION billing.create_customer(
    external_id text, name text DEFAULT NULL, currency text DEFAULT NULL, timezone text DEFAULT NULL,
    email text DEFAULT NULL, billing_entity text DEFAULT 'default', address jsonb DEFAULT '{}',
    tax_id text DEFAULT NULL, metadata jsonb DEFAULT '{}'
) RETURNS billing.customers
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    entity billing.billing_entities;
    created billing.customers;
BEGIN
    SELECT * INTO entity FROM billing.billing_entities e WHERE e.code = create_customer.billing_entity;
    IF NOT FOUND THEN
        PERFORM billing._unknown('billing entity', billing_entity, 'create it with billing.create_billing_entity');
    END IF;
    INSERT INTO billing.customers (external_id, name, email, address, tax_id, currency, timezone, billing_entity_id, metadata)
    VALUES (external_id, name, email, address, tax_id,
            billing._check_currency(coalesce(currency, entity.default_currency)),
            billing._check_timezone(coalesce(timezone, entity.timezone)), entity.id, metadata)
    RETURNING * INTO created;
    INSERT INTO billing.customer_directory (external_id, customer_id) VALUES (created.external_id, created.id);
    RETURN created;
END $$;
CREATE OR REPLACE FUNCTION billing.create_plan(
    code text, name text, "interval" text, amount numeric DEFAULT 0, currency text DEFAULT 'USD',
    charges jsonb DEFAULT '[]', pay_in_advance boolean DEFAULT false, trial_days integer DEFAULT 0,
    minimum_commitment numeric DEFAULT NULL, usage_thresholds jsonb DEFAULT '[]'
) RETURNS billing.plan_versions
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    plan_id bigint;
    created billing.plan_versions;
    charge jsonb;
    charge_index integer := 0;
    metric billing.billable_metrics;
    charge_id bigint;
    group_keys text[];
    filter jsonb;
BEGIN
    PERFORM billing._check_label('interval', "interval", enum_range(NULL::billing.billing_interval)::text[]);
    IF amount < 0 OR trial_days < 0 OR minimum_commitment < 0 THEN
        PERFORM billing._invalid('amount, trial_days and minimum_commitment must not be negative',
            format('got amount %s, trial_days %s, minimum_commitment %s', amount, trial_days, coalesce(minimum_commitment::text, 'null')),
            'use 0 or more');
    END IF;
    IF jsonb_typeof(charges) <> 'array' THEN
        PERFORM billing._invalid('charges must be a JSON array', format('got %s', charges), 'pass [] for a plan without charges');
    END IF;
    INSERT INTO billing.plans AS p (code, name) VALUES (create_plan.code, create_plan.name)
    ON CONFLICT ON CONSTRAINT plans_code_key DO UPDATE SET name = excluded.name
    RETURNING p.id INTO plan_id;
    PERFORM 1 FROM billing.plans WHERE id = plan_id FOR UPDATE;
    INSERT INTO billing.plan_versions (plan_id, version, interval, amount, currency, pay_in_advance, trial_days,
                                       minimum_commitment, usage_thresholds)
    SELECT plan_id, coalesce(max(v.version), 0) + 1, "interval"::billing.billing_interval, amount, billing._check_currency(currency),
           pay_in_advance, trial_days, minimum_commitment, usage_thresholds
    FROM billing.plan_versions v WHERE v.plan_id = plan_id
    RETURNING * INTO created;
    FOR charge IN SELECT value FROM jsonb_array_elements(charges) LOOP
        SELECT * INTO metric FROM billing.billable_metrics m WHERE m.code = charge ->> 'billable_metric_code';
        IF NOT FOUND THEN
            PERFORM billing._unknown('billable metric', coalesce(charge ->> 'billable_metric_code', 'null'),
                format('charges[%s].billable_metric_code must name a metric created with billing.create_billable_metric', charge_index));
        END IF;
        IF coalesce((charge ->> 'prorated')::boolean, false) THEN
            PERFORM billing._check_prorated(charge_index, metric, charge ->> 'charge_model',
                                            coalesce((charge ->> 'pay_in_advance')::boolean, false));
        END IF;
        IF jsonb_typeof(charge -> 'min_amount') = 'number' THEN
            PERFORM billing._invalid(format('charges[%s].min_amount must be a decimal string', charge_index),
                format('got the JSON number %s', charge -> 'min_amount'),
                format('write "min_amount": "%s": a float from a JSON library must not become a price', charge -> 'min_amount'));
        END IF;
        IF charge ? 'pricing_group_keys' AND jsonb_typeof(charge -> 'pricing_group_keys') <> 'array' THEN
            PERFORM billing._invalid(format('charges[%s].pricing_group_keys must be an array of property names', charge_index),
                format('got %s', charge -> 'pricing_group_keys'), 'write ["region"]');
        END IF;
        group_keys := coalesce(ARRAY(SELECT jsonb_array_elements_text(charge -> 'pricing_group_keys')), '{}');
        INSERT INTO billing.charges (plan_version_id, billable_metric_id, price, pay_in_advance, prorated, invoiceable,
                                     min_amount, pricing_group_keys, position)
        VALUES (created.id, metric.id,
                billing.price(jsonb_build_object('charge_model', charge -> 'charge_model', 'properties', coalesce(charge -> 'properties', '{}')))::jsonb,
                coalesce((charge ->> 'pay_in_advance')::boolean, false), coalesce((charge ->> 'prorated')::boolean, false),
                coalesce((charge ->> 'invoiceable')::boolean, true), (charge ->> 'min_amount')::numeric,
                group_keys, charge_index)
        RETURNING id INTO charge_id;
        FOR filter IN SELECT value FROM jsonb_array_elements(coalesce(charge -> 'filters', '[]')) LOOP
            IF jsonb_typeof(filter -> 'values') <> 'object' OR EXISTS (
                SELECT 1 FROM jsonb_each(filter -> 'values') kv
                WHERE NOT (metric.filters ? kv.key) OR jsonb_typeof(kv.value) <> 'array'
                   OR NOT (metric.filters -> kv.key) @> kv.value) THEN
                PERFORM billing._invalid(format('charges[%s].filters values must use the metric''s filter keys and values', charge_index),
                    format('got %s; metric %s allows %s', filter -> 'values', metric.code, metric.filters),
                    'write values like {"region": ["us"]} with keys and values from the billable metric''s filters');
            END IF;
            INSERT INTO billing.charge_filters (charge_id, "values", price, invoice_display_name)
            VALUES (charge_id, filter -> 'values',
                    billing.price(jsonb_build_object('charge_model', charge -> 'charge_model',
                                                     'properties', coalesce(filter -> 'properties', '{}')))::jsonb,
                    filter ->> 'invoice_display_name');
        END LOOP;
        charge_index := charge_index + 1;
    END LOOP;
    RETURN created;
END $$;
CREATE OR REPLACE FUNCTION billing.create_subscription(
    external_id text, customer text, plan text, subscription_at timestamptz DEFAULT now(),
    billing_time text DEFAULT 'calendar', plan_version integer DEFAULT NULL
) RETURNS billing.subscriptions
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    customer_id bigint;
    customer_currency text;
    customer_timezone text;
    version_id bigint;
    version_number integer;
    plan_currency text;
    created billing.subscriptions;
BEGIN
    PERFORM billing._check_label('billing_time', billing_time, enum_range(NULL::billing.billing_time)::text[]);
    SELECT d.customer_id INTO customer_id FROM billing.customer_directory d WHERE d.external_id = create_subscription.customer;
    IF NOT FOUND THEN
        PERFORM billing._unknown('customer', customer, 'create it with billing.create_customer');
    END IF;
    SELECT c.currency, c.timezone INTO customer_currency, customer_timezone FROM billing.customers c WHERE c.id = customer_id;
    SELECT v.id, v.version, v.currency INTO version_id, version_number, plan_currency FROM billing.plan_versions v JOIN billing.plans p ON p.id = v.plan_id
    WHERE p.code = create_subscription.plan AND (create_subscription.plan_version IS NULL OR v.version = create_subscription.plan_version)
    ORDER BY v.version DESC LIMIT 1;
    IF NOT FOUND THEN
        PERFORM billing._unknown('plan', plan || coalesce(' version ' || plan_version, ''), 'create it with billing.create_plan');
    END IF;
    -- Usage is priced in the customer's currency: a plan in another one would be billed
    -- with its amounts read as the wrong money.
    IF plan_currency <> customer_currency THEN
        PERFORM billing._invalid(format('plan "%s" is priced in %s, but customer "%s" is billed in %s', plan, plan_currency, customer, customer_currency),
            format('plan "%s" version %s has currency %s; customer "%s" has currency %s', plan, version_number, plan_currency, customer, customer_currency),
            format('subscribe the customer to a plan priced in %s (create one with billing.create_plan(..., currency => %L))', customer_currency, customer_currency));
    END IF;
    INSERT INTO billing.subscriptions (external_id, customer_id, plan_version_id, status, billing_time, subscription_at, started_at)
    VALUES (external_id, customer_id, version_id,
            CASE WHEN subscription_at > now() THEN 'pending' ELSE 'active' END::billing.subscription_status,
            billing_time::billing.billing_time, subscription_at,
            CASE WHEN subscription_at > now() THEN NULL ELSE subscription_at END)
    RETURNING * INTO created;
    INSERT INTO billing.subscription_directory (external_id, customer_id, subscription_id, plan_version_id, timezone, active_from)
    VALUES (created.external_id, created.customer_id, created.id, created.plan_version_id, customer_timezone,
            coalesce(created.started_at, created.subscription_at));
    RETURN created;
END $$;
CREATE OR REPLACE FUNCTION billing.terminate_subscription(external_id text, terminated_at timestamptz DEFAULT now())
RETURNS billing.subscriptions
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    entry billing.subscription_directory;
    subscription billing.subscriptions;
BEGIN
    SELECT * INTO entry FROM billing.subscription_directory d WHERE d.external_id = terminate_subscription.external_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM billing._unknown('subscription', external_id, 'check the external_id');
    END IF;
    SELECT * INTO subscription FROM billing.subscriptions s
    WHERE s.customer_id = entry.customer_id AND s.id = entry.subscription_id FOR UPDATE;
    IF subscription.status = 'terminated' THEN
        PERFORM billing._raise('55000', format('subscription "%s" is already terminated', external_id),
                               format('terminated at %s', subscription.terminated_at), 'create a new subscription');
    END IF;
    IF terminated_at < subscription.subscription_at THEN
        PERFORM billing._invalid('terminated_at is before the subscription started',
            format('got %s, started %s', terminated_at, subscription.subscription_at), 'terminate at or after the start');
    END IF;
    UPDATE billing.subscriptions s SET status = 'terminated', terminated_at = terminate_subscription.terminated_at,
        started_at = coalesce(s.started_at, s.subscription_at)
    WHERE s.customer_id = entry.customer_id AND s.id = entry.subscription_id RETURNING * INTO subscription;
    UPDATE billing.subscription_directory d SET active_until = subscription.terminated_at
    WHERE d.external_id = entry.external_id;
    -- A termination that has happened is billed at once: the final invoice.
    IF subscription.terminated_at <= now() THEN
        PERFORM billing._bill_subscription(subscription.customer_id, subscription.id, now());
    END IF;
    RETURN subscription;
END $$;
CREATE OR REPLACE FUNCTION billing.activate_subscriptions(as_of timestamptz DEFAULT now()) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    activated integer;
BEGIN
    UPDATE billing.subscriptions s SET status = 'active', started_at = s.subscription_at
    WHERE s.status = 'pending' AND s.subscription_at <= as_of;
    GET DIAGNOSTICS activated = ROW_COUNT;
    RETURN activated;
END $$;
COMMENT ON TABLE billing.customer_directory IS 'Which customer each external customer id names: where that id is unique across all customers (a reference table on Citus). Written by billing.create_customer.';
COMMENT ON TABLE billing.subscription_directory IS 'Which customer and subscription each external subscription id names, with the time zone and active window ingestion checks events against: where that id is unique, and how an event is routed to its customer (a reference table on Citus). Kept in step by billing.create_subscription and billing.terminate_subscription.';

-- The invoice arithmetic of the library (src/api/invoicing).
CREATE FUNCTION billing._period_share("amount" numeric, "days" integer, "period_days" integer) RETURNS numeric
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', '_period_share_wrapper';
CREATE FUNCTION billing._shortfall("minimum" numeric, "billed" numeric) RETURNS numeric
IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', '_shortfall_wrapper';

-- Invoicing: the billing run turns each subscription's periods into invoices and their
-- fees, exactly once; drafts stay open during the billing entity's grace period, then are
-- finalized (numbered, immutable) or voided; every change is reported through the outbox.

CREATE TYPE billing.invoice_type AS ENUM ('subscription');
CREATE TYPE billing.invoice_status AS ENUM ('draft', 'finalized', 'voided');
CREATE TYPE billing.payment_status AS ENUM ('pending', 'succeeded', 'failed');
CREATE TYPE billing.fee_type AS ENUM ('subscription', 'charge', 'charge_minimum', 'commitment', 'adjustment');

-- One invoice per subscription and billing instant (`billing_at`): a period's close (its
-- arrears fees, and the next period's in-advance fee), the subscription's start (an
-- in-advance fee), a trial's end (an in-advance fee) or the termination. The key
-- (customer, subscription, billing_at) is what makes billing idempotent: a second run, or
-- two at once, finds the invoice and bills nothing again.
CREATE TABLE billing.invoices (
    id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id bigint NOT NULL REFERENCES billing.customers,
    subscription_id bigint,
    billing_entity_id bigint NOT NULL REFERENCES billing.billing_entities,
    invoice_type billing.invoice_type NOT NULL DEFAULT 'subscription',
    status billing.invoice_status NOT NULL DEFAULT 'draft',
    -- Given at finalization; drafts carry none.
    number text,
    sequence_scope text,
    sequence_number bigint,
    currency text NOT NULL,
    timezone text NOT NULL,
    billing_at timestamptz NOT NULL,
    issuing_date date NOT NULL,
    due_date date,
    -- The base fee period and the usage period the invoice covers (either may be absent).
    subscription_from timestamptz,
    subscription_to timestamptz,
    charges_from timestamptz,
    charges_to timestamptz,
    fees_amount numeric NOT NULL DEFAULT 0,
    progressive_billing_credit_amount numeric NOT NULL DEFAULT 0,
    coupons_amount numeric NOT NULL DEFAULT 0,
    sub_total_excluding_taxes numeric NOT NULL DEFAULT 0,
    taxes_amount numeric NOT NULL DEFAULT 0,
    sub_total_including_taxes numeric NOT NULL DEFAULT 0,
    credit_notes_amount numeric NOT NULL DEFAULT 0,
    prepaid_credit_amount numeric NOT NULL DEFAULT 0,
    total_amount numeric NOT NULL DEFAULT 0,
    payment_status billing.payment_status NOT NULL DEFAULT 'pending',
    created_at timestamptz NOT NULL DEFAULT now(),
    refreshed_at timestamptz NOT NULL DEFAULT now(),
    finalized_at timestamptz,
    voided_at timestamptz,
    PRIMARY KEY (customer_id, id),
    CONSTRAINT invoices_billing_key UNIQUE (customer_id, subscription_id, billing_at),
    CONSTRAINT invoices_number_key UNIQUE (customer_id, number),
    CHECK ((status = 'draft') = (number IS NULL))
);
CREATE INDEX invoices_open ON billing.invoices (billing_at) WHERE status = 'draft';

-- A fee: one thing billed, with its exact amount and its amount rounded to the currency.
-- `fee_key` names what it bills (the fee type, the period, the charge, filter and group)
-- once per subscription: a fee is never billed twice, whichever invoice holds it.
-- Fees of charges that are not invoiceable are kept with invoiceable = false and left out
-- of the invoice's totals and lines.
CREATE TABLE billing.fees (
    id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id bigint NOT NULL,
    invoice_id bigint NOT NULL,
    subscription_id bigint NOT NULL,
    fee_type billing.fee_type NOT NULL,
    fee_key text NOT NULL,
    charge_id bigint,
    charge_filter_id bigint,
    billable_metric_code text,
    charge_model text,
    filter_values jsonb,
    grouped_by jsonb,
    description text NOT NULL,
    units numeric NOT NULL DEFAULT 0,
    events_count bigint NOT NULL DEFAULT 0,
    precise_unit_amount numeric NOT NULL DEFAULT 0,
    precise_amount numeric NOT NULL,
    amount numeric NOT NULL,
    amount_details jsonb,
    invoiceable boolean NOT NULL DEFAULT true,
    from_datetime timestamptz NOT NULL,
    to_datetime timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, id),
    CONSTRAINT fees_billing_key UNIQUE (customer_id, subscription_id, fee_key),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES billing.invoices (customer_id, id)
);
CREATE INDEX fees_by_invoice ON billing.fees (customer_id, invoice_id);

-- The usage windows each invoice computed, with the events the window held just before
-- (counted from the day rollups, so an event that lands during the computation is counted
-- later, never billed unseen): an event that arrives afterwards for a window of a finalized
-- invoice raises the window's count above every recorded one, and the next invoice bills
-- the difference as adjustment fees (recording the window again).
CREATE TABLE billing.billed_windows (
    customer_id bigint NOT NULL,
    subscription_id bigint NOT NULL,
    from_datetime timestamptz NOT NULL,
    invoice_id bigint NOT NULL,
    to_datetime timestamptz NOT NULL,
    plan_version_id bigint NOT NULL,
    adjustment boolean NOT NULL,
    events_count bigint NOT NULL,
    PRIMARY KEY (customer_id, subscription_id, from_datetime, invoice_id),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES billing.invoices (customer_id, id)
);

-- Per billing entity and month, the last number given (entities numbering per_entity).
CREATE TABLE billing.invoice_sequences (
    billing_entity_id bigint NOT NULL REFERENCES billing.billing_entities,
    scope text NOT NULL,
    last_number bigint NOT NULL,
    PRIMARY KEY (billing_entity_id, scope)
);

-- What the billing run could not bill, and why: one row per subscription and attempt.
-- The run goes on with the other subscriptions; a later successful run of the
-- subscription removes its rows.
CREATE TABLE billing.billing_failures (
    id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id bigint NOT NULL,
    subscription_id bigint NOT NULL,
    as_of timestamptz NOT NULL,
    sqlstate text NOT NULL,
    message text NOT NULL,
    detail text,
    failed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, id)
);

-- Billing events for applications, written in the transaction of what they report (so an
-- event exists exactly when its change committed) and announced with
-- pg_notify('pg_billing', id). Consume with DELETE ... RETURNING (docs/invoicing.md).
CREATE TABLE billing.outbox (
    id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id bigint NOT NULL,
    type text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, id)
);

-- Finalized and voided invoices and their fees are immutable; the only changes a finalized
-- invoice accepts are its payment status and voiding.
CREATE FUNCTION billing._invoice_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'draft' THEN
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.status = 'finalized'
       AND (NEW.status = 'voided' OR NEW.status = 'finalized') THEN
        -- Every column but these must stay as it was.
        IF (to_jsonb(NEW) - ARRAY['status', 'voided_at', 'payment_status'])
           = (to_jsonb(OLD) - ARRAY['status', 'voided_at', 'payment_status']) THEN
            RETURN NEW;
        END IF;
    END IF;
    PERFORM billing._raise('55000', format('invoice %s is %s and cannot be changed', OLD.id, OLD.status),
        format('%s of a %s invoice', TG_OP, OLD.status),
        'finalized invoices accept only billing.set_payment_status and billing.void_invoice; correct them with a later invoice');
    RETURN NULL;
END $$;
CREATE TRIGGER invoices_immutable BEFORE UPDATE OR DELETE ON billing.invoices
FOR EACH ROW EXECUTE FUNCTION billing._invoice_immutable();

CREATE FUNCTION billing._fee_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    invoice_status billing.invoice_status;
BEGIN
    SELECT i.status INTO invoice_status FROM billing.invoices i WHERE i.customer_id = OLD.customer_id AND i.id = OLD.invoice_id;
    IF invoice_status = 'draft' THEN
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    PERFORM billing._raise('55000', format('fee %s is on %s invoice %s and cannot be changed', OLD.id, invoice_status, OLD.invoice_id),
        format('%s of a fee of a %s invoice', TG_OP, invoice_status), 'correct a finalized invoice with a later invoice');
    RETURN NULL;
END $$;
CREATE TRIGGER fees_immutable BEFORE UPDATE OR DELETE ON billing.fees
FOR EACH ROW EXECUTE FUNCTION billing._fee_immutable();

-- Writes an outbox event and announces it.
CREATE FUNCTION billing._emit(customer_id bigint, type text, payload jsonb) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    event_id bigint;
BEGIN
    INSERT INTO billing.outbox (customer_id, type, payload) VALUES (customer_id, type, payload) RETURNING id INTO event_id;
    PERFORM pg_notify('pg_billing', event_id::text);
END $$;

-- (The functions that read or write per-customer tables are PL/pgSQL: Citus plans no
-- SQL-language function that reads a distributed table with parameters.)
CREATE FUNCTION billing._invoice_event(inv billing.invoices) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT jsonb_build_object('invoice_id', inv.id, 'number', inv.number, 'status', inv.status,
                                      'payment_status', inv.payment_status, 'customer_external_id', c.external_id,
                                      'total_amount', inv.total_amount, 'currency', inv.currency)
            FROM billing.customers c WHERE c.id = inv.customer_id);
END $$;

-- The invoice of a subscription at a billing instant, created (as a draft) if it is not
-- there yet.
CREATE FUNCTION billing._invoice_at(sub billing.subscriptions, cust billing.customers, at timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    invoice_id bigint;
BEGIN
    SELECT i.id INTO invoice_id FROM billing.invoices i
    WHERE i.customer_id = sub.customer_id AND i.subscription_id = sub.id AND i.billing_at = at;
    IF NOT FOUND THEN
        INSERT INTO billing.invoices (customer_id, subscription_id, billing_entity_id, currency, timezone, billing_at, issuing_date)
        VALUES (sub.customer_id, sub.id, cust.billing_entity_id, cust.currency, cust.timezone, at, (at AT TIME ZONE cust.timezone)::date)
        RETURNING id INTO invoice_id;
    END IF;
    RETURN invoice_id;
END $$;

-- Inserts a fee on an invoice, rounded to the currency.
CREATE FUNCTION billing._add_fee(
    sub billing.subscriptions, cust billing.customers, invoice_id bigint, fee_type billing.fee_type, fee_key text,
    description text, precise_amount numeric, from_datetime timestamptz, to_datetime timestamptz,
    units numeric DEFAULT 1, charge_id bigint DEFAULT NULL, invoiceable boolean DEFAULT true
) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    metric_code text;
BEGIN
    SELECT m.code INTO metric_code FROM billing.charges ch JOIN billing.billable_metrics m ON m.id = ch.billable_metric_id WHERE ch.id = charge_id;
    INSERT INTO billing.fees (customer_id, invoice_id, subscription_id, fee_type, fee_key, charge_id, billable_metric_code,
                              description, units, precise_unit_amount, precise_amount, amount, invoiceable, from_datetime, to_datetime)
    VALUES (sub.customer_id, invoice_id, sub.id, fee_type, fee_key, charge_id, metric_code, description, units, CASE WHEN units = 0 THEN 0 ELSE precise_amount / units END,
            precise_amount, billing.round_money(precise_amount, cust.currency), invoiceable, from_datetime, to_datetime);
END $$;

-- The base fee of a period (from_day to to_day) for `days` of its days, on an invoice, which
-- then names the base fee's period.
CREATE FUNCTION billing._add_base_fee(
    sub billing.subscriptions, cust billing.customers, invoice_id bigint, plan billing.plan_versions, plan_name text,
    from_day date, to_day date, days integer, from_datetime timestamptz, to_datetime timestamptz
) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
BEGIN
    PERFORM billing._add_fee(sub, cust, invoice_id, 'subscription', 'subscription:' || to_char(from_day, 'YYYY-MM-DD'), plan_name,
        billing._period_share(plan.amount, days, to_day - from_day + 1), from_datetime, to_datetime);
    UPDATE billing.invoices i SET subscription_from = from_datetime, subscription_to = to_datetime
    WHERE i.customer_id = sub.customer_id AND i.id = invoice_id;
END $$;

-- The events a usage window of a subscription holds now, from the day rollups of the
-- metrics its plan version charges.
CREATE FUNCTION billing._window_events(
    customer_id bigint, subscription_id bigint, plan_version_id bigint, from_datetime timestamptz, to_datetime timestamptz, timezone text
) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
BEGIN
    RETURN (SELECT coalesce(sum(r.events_count), 0)::bigint
            FROM billing.usage_rollups r
            WHERE r.customer_id = customer_id AND r.subscription_id = subscription_id
              AND r.billable_metric_id IN (SELECT c.billable_metric_id FROM billing.charges c WHERE c.plan_version_id = plan_version_id)
              AND r.day BETWEEN (from_datetime AT TIME ZONE timezone)::date AND (to_datetime AT TIME ZONE timezone)::date);
END $$;

-- Records that an invoice computes a usage window, with the window's events as they are
-- before the computation.
CREATE FUNCTION billing._record_window(
    sub billing.subscriptions, cust billing.customers, invoice_id bigint, window_from timestamptz, window_to timestamptz,
    adjustment boolean, events_count bigint
) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
BEGIN
    INSERT INTO billing.billed_windows (customer_id, subscription_id, from_datetime, invoice_id, to_datetime, plan_version_id, adjustment, events_count)
    VALUES (sub.customer_id, sub.id, window_from, invoice_id, window_to, sub.plan_version_id, adjustment, events_count);
END $$;

-- The key of a usage fee: its charge, filter, group and window, and for an adjustment the
-- instant of the invoice that bills it. STABLE as to_char is, so that it is inlined into
-- the statements that insert fees (one call per fee otherwise: 200,000 for a subscription
-- with 200,000 usage lines).
CREATE FUNCTION billing._usage_fee_key(
    kind text, charge_id bigint, filter_id bigint, grouped_by jsonb, window_from timestamptz, billed_at timestamptz DEFAULT NULL
) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT format('%s:%s:%s:%s:%s', kind, charge_id, coalesce(filter_id::text, 'default'), grouped_by,
                  to_char(window_from AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'))
           || coalesce('@' || to_char(billed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), '')
$$;

-- The usage fees of a window: one per charge, filter and pricing group, from the same
-- lines billing.usage reports; then each charge's minimum spend true-up.
CREATE FUNCTION billing._add_usage_fees(
    sub billing.subscriptions, cust billing.customers, invoice_id bigint, window_from timestamptz, window_to timestamptz,
    used_days integer, period_days integer
) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    minimum record;
BEGIN
    PERFORM billing._record_window(sub, cust, invoice_id, window_from, window_to, false,
        billing._window_events(sub.customer_id, sub.id, sub.plan_version_id, window_from, window_to, cust.timezone));
    INSERT INTO billing.fees (customer_id, invoice_id, subscription_id, fee_type, fee_key, charge_id, charge_filter_id,
                              billable_metric_code, charge_model, filter_values, grouped_by, description, units, events_count,
                              precise_unit_amount, precise_amount, amount, amount_details, invoiceable, from_datetime, to_datetime)
    -- Each price of the plan version parsed once, not once per line.
    WITH prices AS MATERIALIZED (
        SELECT c.id AS charge_id, NULL::bigint AS filter_id, c.price::billing.price AS price, m.name AS description, c.invoiceable
        FROM billing.charges c JOIN billing.billable_metrics m ON m.id = c.billable_metric_id
        WHERE c.plan_version_id = sub.plan_version_id
        UNION ALL
        SELECT c.id, cf.id, cf.price::billing.price, coalesce(cf.invoice_display_name, m.name), c.invoiceable
        FROM billing.charge_filters cf JOIN billing.charges c ON c.id = cf.charge_id JOIN billing.billable_metrics m ON m.id = c.billable_metric_id
        WHERE c.plan_version_id = sub.plan_version_id
    )
    SELECT sub.customer_id, invoice_id, sub.id, 'charge', billing._usage_fee_key('charge', u.charge_id, u.filter_id, u.grouped_by, window_from),
           u.charge_id, u.filter_id, u.billable_metric_code, u.charge_model, u.filter_values,
           nullif(u.grouped_by, '{}'::jsonb),
           p.description, u.units, u.events_count,
           CASE WHEN u.units = 0 THEN 0 ELSE u.amount / u.units END,
           u.amount, billing.round_money(u.amount, cust.currency),
           CASE WHEN u.charge_model IN ('graduated', 'volume', 'graduated_percentage', 'package')
                THEN billing.amount_details(p.price, u.units) END,
           p.invoiceable, u.from_datetime, u.to_datetime
    FROM billing._usage(sub, cust, window_from, window_to) u
    JOIN prices p ON p.charge_id = u.charge_id AND p.filter_id IS NOT DISTINCT FROM u.filter_id;

    FOR minimum IN
        SELECT c.id, c.invoiceable, m.name,
               billing._shortfall(billing._period_share(c.min_amount, used_days, period_days), coalesce(sum(fe.precise_amount), 0)) AS missing
        FROM billing.charges c
        JOIN billing.billable_metrics m ON m.id = c.billable_metric_id
        LEFT JOIN billing.fees fe ON fe.customer_id = sub.customer_id AND fe.invoice_id = _add_usage_fees.invoice_id
                                 AND fe.fee_type = 'charge' AND fe.charge_id = c.id
        WHERE c.plan_version_id = sub.plan_version_id AND c.min_amount IS NOT NULL
        GROUP BY c.id, c.min_amount, c.invoiceable, m.name
    LOOP
        CONTINUE WHEN minimum.missing = 0;
        PERFORM billing._add_fee(sub, cust, invoice_id, 'charge_minimum',
            billing._usage_fee_key('charge_minimum', minimum.id, NULL, '{}', window_from), minimum.name || ' (minimum spend)',
            minimum.missing, window_from, window_to, 1, minimum.id, minimum.invoiceable);
    END LOOP;
END $$;

-- The usage windows of a subscription's finalized invoices that hold more events now than
-- any invoice (but `invoice_id`) saw: events that arrived after their period was invoiced.
CREATE FUNCTION billing._late_windows(sub billing.subscriptions, cust billing.customers, invoice_id bigint)
RETURNS TABLE (from_datetime timestamptz, to_datetime timestamptz, plan_version_id bigint, events_now bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w record;
BEGIN
    -- The counts are taken here, not in the query: on Citus that query runs on the
    -- customer's shard, where a function reading another distributed table cannot.
    FOR w IN
        SELECT bw.from_datetime, max(bw.to_datetime) AS to_datetime, min(bw.plan_version_id) AS plan_version_id,
               max(bw.events_count) AS events_count
        FROM billing.billed_windows bw
        JOIN billing.invoices i ON i.customer_id = bw.customer_id AND i.id = bw.invoice_id
        WHERE bw.customer_id = sub.customer_id AND bw.subscription_id = sub.id AND bw.invoice_id IS DISTINCT FROM invoice_id
        GROUP BY bw.from_datetime
        HAVING bool_or(NOT bw.adjustment AND i.status <> 'draft')
        ORDER BY bw.from_datetime
    LOOP
        from_datetime := w.from_datetime;
        to_datetime := w.to_datetime;
        plan_version_id := w.plan_version_id;
        events_now := billing._window_events(sub.customer_id, sub.id, w.plan_version_id, w.from_datetime, w.to_datetime, cust.timezone);
        IF events_now > w.events_count THEN
            RETURN NEXT;
        END IF;
    END LOOP;
END $$;

-- Late events: for each late window, the difference of each usage line (its amount now
-- minus everything its fees and earlier adjustments billed) becomes an adjustment fee on
-- this invoice.
CREATE FUNCTION billing._add_adjustments(sub billing.subscriptions, cust billing.customers, invoice_id bigint, at timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w record;
    billed_sub billing.subscriptions := sub;
BEGIN
    FOR w IN SELECT * FROM billing._late_windows(sub, cust, invoice_id) LOOP
        billed_sub.plan_version_id := w.plan_version_id;
        PERFORM billing._record_window(billed_sub, cust, invoice_id, w.from_datetime, w.to_datetime, true, w.events_now);
        INSERT INTO billing.fees (customer_id, invoice_id, subscription_id, fee_type, fee_key, charge_id, charge_filter_id,
                                  billable_metric_code, charge_model, filter_values, grouped_by, description, units, events_count,
                                  precise_unit_amount, precise_amount, amount, invoiceable, from_datetime, to_datetime)
        SELECT sub.customer_id, invoice_id, sub.id, 'adjustment',
               billing._usage_fee_key('adjustment', u.charge_id, u.filter_id, u.grouped_by, w.from_datetime, at),
               u.charge_id, u.filter_id, u.billable_metric_code, u.charge_model, u.filter_values, nullif(u.grouped_by, '{}'::jsonb),
               format('%s (late usage, %s to %s)', m.name, (w.from_datetime AT TIME ZONE cust.timezone)::date,
                      (w.to_datetime AT TIME ZONE cust.timezone)::date),
               u.units - prior.units, u.events_count - prior.events_count, 0,
               u.amount - prior.precise_amount, billing.round_money(u.amount - prior.precise_amount, cust.currency),
               ch.invoiceable, w.from_datetime, w.to_datetime
        FROM billing._usage(billed_sub, cust, w.from_datetime, w.to_datetime) u
        JOIN billing.charges ch ON ch.id = u.charge_id
        JOIN billing.billable_metrics m ON m.id = ch.billable_metric_id
        CROSS JOIN LATERAL (
            -- Everything billed for this line so far, voided invoices included: voiding an
            -- invoice does not put its usage up for billing again.
            SELECT coalesce(sum(fe.units), 0) AS units, coalesce(sum(fe.events_count), 0) AS events_count,
                   coalesce(sum(fe.precise_amount), 0) AS precise_amount
            FROM billing.fees fe
            WHERE fe.customer_id = sub.customer_id AND fe.subscription_id = sub.id AND fe.fee_type IN ('charge', 'adjustment')
              AND fe.charge_id = u.charge_id AND fe.charge_filter_id IS NOT DISTINCT FROM u.filter_id
              AND coalesce(fe.grouped_by, '{}'::jsonb) = u.grouped_by AND fe.from_datetime = w.from_datetime
        ) prior
        WHERE u.events_count <> prior.events_count OR u.amount <> prior.precise_amount;
    END LOOP;
END $$;

-- Bills a subscription up to `as_of`: walks its periods from the start and adds, on the
-- invoice of each billing instant, what falls due there. With `only_at`, recomputes the
-- fees of that one instant (a draft's refresh); without it, bills every instant after the
-- last one invoiced. Returns the invoices it created.
CREATE FUNCTION billing._bill_periods(sub billing.subscriptions, as_of timestamptz, only_at timestamptz DEFAULT NULL)
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    cust billing.customers;
    plan billing.plan_versions;
    plan_name text;
    tz text;
    starts timestamptz := coalesce(sub.started_at, sub.subscription_at);
    ends timestamptz := coalesce(sub.terminated_at, 'infinity');
    trial_end timestamptz;
    anchor date;
    start_day date;
    paid_from_day date;
    day date;
    p record;
    period_from timestamptz;
    period_to timestamptz;
    billed_from timestamptz;
    billed_to timestamptz;
    closes_at timestamptz;
    last_billed timestamptz;
    at timestamptz;
    invoice_id bigint;
    created bigint[] := '{}';
    days integer;
    period_key text;
    committed numeric;
    missing numeric;
BEGIN
    IF starts > as_of THEN
        RETURN;
    END IF;
    SELECT * INTO cust FROM billing.customers c WHERE c.id = sub.customer_id;
    SELECT * INTO plan FROM billing.plan_versions v WHERE v.id = sub.plan_version_id;
    SELECT pl.name INTO plan_name FROM billing.plans pl WHERE pl.id = plan.plan_id;
    tz := cust.timezone;
    trial_end := CASE WHEN plan.trial_days > 0 THEN starts + plan.trial_days * interval '1 day' END;
    start_day := (starts AT TIME ZONE tz)::date;
    anchor := start_day;
    paid_from_day := greatest(start_day, (trial_end AT TIME ZONE tz)::date);
    SELECT max(i.billing_at) INTO last_billed FROM billing.invoices i
    WHERE i.customer_id = sub.customer_id AND i.subscription_id = sub.id;
    -- Instants up to the last one billed are done: start from the period holding it.
    day := greatest(start_day, ((coalesce(only_at, last_billed) - interval '1 microsecond') AT TIME ZONE tz)::date);
    LOOP
        SELECT * INTO p FROM billing._period_dates(plan.interval::text, sub.billing_time::text, anchor, day);
        period_from := (p.from_date::timestamp AT TIME ZONE tz);
        period_to := ((p.to_date + 1)::timestamp AT TIME ZONE tz) - interval '1 microsecond';
        billed_from := greatest(period_from, starts);
        billed_to := least(period_to, ends);
        EXIT WHEN billed_from > as_of OR billed_from > billed_to;
        period_key := to_char(p.from_date, 'YYYY-MM-DD');

        -- In advance: the base fee when the period starts (or the subscription, or the trial
        -- ends), for the days from then to the period's end.
        at := greatest(billed_from, trial_end);
        IF plan.pay_in_advance AND plan.amount > 0 AND at <= period_to AND at < ends AND at <= as_of
           AND (only_at = at OR (only_at IS NULL AND at > coalesce(last_billed, '-infinity'))) THEN
            invoice_id := billing._invoice_at(sub, cust, at);
            created := created || invoice_id;
            PERFORM billing._add_base_fee(sub, cust, invoice_id, plan, plan_name, p.from_date, p.to_date,
                                          p.to_date - greatest(p.from_date, paid_from_day) + 1, greatest(period_from, at), period_to);
        END IF;

        -- At the period's close (or the termination): arrears base fee, usage, minimums.
        closes_at := CASE WHEN ends <= period_to THEN ends ELSE period_to + interval '1 microsecond' END;
        EXIT WHEN closes_at > as_of;
        IF only_at = closes_at OR (only_at IS NULL AND closes_at > coalesce(last_billed, '-infinity')) THEN
            invoice_id := billing._invoice_at(sub, cust, closes_at);
            created := created || invoice_id;
            days := (billed_to AT TIME ZONE tz)::date - greatest(p.from_date, paid_from_day) + 1;
            IF NOT plan.pay_in_advance AND plan.amount > 0 AND days > 0 THEN
                PERFORM billing._add_base_fee(sub, cust, invoice_id, plan, plan_name, p.from_date, p.to_date, days, billed_from, billed_to);
            END IF;
            days := (billed_to AT TIME ZONE tz)::date - greatest(p.from_date, start_day) + 1;
            PERFORM billing._add_usage_fees(sub, cust, invoice_id, billed_from, billed_to, days, p.to_date - p.from_date + 1);
            UPDATE billing.invoices i SET charges_from = billed_from, charges_to = billed_to
            WHERE i.customer_id = sub.customer_id AND i.id = invoice_id;
            -- The plan's minimum commitment, against every fee of the period wherever it was
            -- billed (an in-advance base fee is on an earlier invoice).
            IF plan.minimum_commitment IS NOT NULL THEN
                SELECT coalesce(sum(fe.amount), 0) INTO committed FROM billing.fees fe
                JOIN billing.invoices i ON i.customer_id = fe.customer_id AND i.id = fe.invoice_id AND i.status <> 'voided'
                WHERE fe.customer_id = sub.customer_id AND fe.subscription_id = sub.id AND fe.invoiceable
                  AND (fe.fee_key = 'subscription:' || period_key
                       OR (fe.invoice_id = invoice_id AND fe.fee_type IN ('charge', 'charge_minimum') AND fe.from_datetime = billed_from));
                missing := billing._shortfall(
                    billing.round_money(billing._period_share(plan.minimum_commitment, days, p.to_date - p.from_date + 1), cust.currency),
                    committed);
                IF missing > 0 THEN
                    PERFORM billing._add_fee(sub, cust, invoice_id, 'commitment', 'commitment:' || period_key,
                                             plan_name || ' (minimum commitment)', missing, billed_from, billed_to);
                END IF;
            END IF;
        END IF;
        EXIT WHEN ends <= period_to;
        day := p.to_date + 1;
    END LOOP;
    RETURN QUERY SELECT DISTINCT unnest(created);
END $$;

-- Sets an invoice's totals from its invoiceable fees (taxes, coupons, credit notes and
-- prepaid credits are zero until they exist).
CREATE FUNCTION billing._total_invoice(customer_id bigint, invoice_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    fees numeric;
BEGIN
    SELECT coalesce(sum(fe.amount), 0) INTO fees FROM billing.fees fe
    WHERE fe.customer_id = customer_id AND fe.invoice_id = invoice_id AND fe.invoiceable;
    UPDATE billing.invoices i
    SET fees_amount = fees, sub_total_excluding_taxes = fees, sub_total_including_taxes = fees, total_amount = fees, refreshed_at = now()
    WHERE i.customer_id = customer_id AND i.id = invoice_id;
END $$;

-- A number with leading zeros up to `width` digits, never cut (lpad would cut 1000 to 100).
CREATE FUNCTION billing._zero_padded(n bigint, width integer) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT lpad(n::text, greatest(width, length(n::text)), '0')
$$;

-- Gives a draft its number, due date and finalized status.
-- Numbers are gapless: the counter row (per entity and month) or the customer row is
-- locked until the transaction ends, so concurrent finalizations take turns.
CREATE FUNCTION billing._finalize(inv billing.invoices) RETURNS billing.invoices
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    entity billing.billing_entities;
    scope text;
    next_number bigint;
    invoice_number text;
    finalized billing.invoices;
BEGIN
    SELECT * INTO entity FROM billing.billing_entities e WHERE e.id = inv.billing_entity_id;
    IF entity.numbering = 'per_entity' THEN
        scope := to_char(inv.issuing_date, 'YYYYMM');
        INSERT INTO billing.invoice_sequences AS s (billing_entity_id, scope, last_number) VALUES (entity.id, scope, 1)
        ON CONFLICT ON CONSTRAINT invoice_sequences_pkey DO UPDATE SET last_number = s.last_number + 1
        RETURNING last_number INTO next_number;
    ELSE
        scope := 'customer';
        PERFORM 1 FROM billing.customers c WHERE c.id = inv.customer_id FOR UPDATE;
        SELECT coalesce(max(i.sequence_number), 0) + 1 INTO next_number FROM billing.invoices i
        WHERE i.customer_id = inv.customer_id AND i.sequence_scope = 'customer';
    END IF;
    invoice_number := CASE entity.numbering
        WHEN 'per_entity' THEN format('%s-%s-%s', entity.invoice_prefix, scope, billing._zero_padded(next_number, 4))
        ELSE format('%s-%s-%s', entity.invoice_prefix, billing._zero_padded(inv.customer_id, 3), billing._zero_padded(next_number, 3)) END;
    UPDATE billing.invoices i
    SET status = 'finalized', finalized_at = now(), sequence_scope = scope, sequence_number = next_number,
        due_date = inv.issuing_date + entity.net_payment_term_days, number = invoice_number
    WHERE i.customer_id = inv.customer_id AND i.id = inv.id
    RETURNING * INTO finalized;
    PERFORM billing._emit(finalized.customer_id, 'invoice.finalized', billing._invoice_event(finalized));
    RETURN finalized;
END $$;

-- Recomputes a draft's fees from the usage as it is now.
CREATE FUNCTION billing._refresh(inv billing.invoices) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    sub billing.subscriptions;
    cust billing.customers;
BEGIN
    SELECT * INTO sub FROM billing.subscriptions s WHERE s.customer_id = inv.customer_id AND s.id = inv.subscription_id FOR UPDATE;
    DELETE FROM billing.fees fe WHERE fe.customer_id = inv.customer_id AND fe.invoice_id = inv.id;
    DELETE FROM billing.billed_windows bw WHERE bw.customer_id = inv.customer_id AND bw.invoice_id = inv.id;
    SELECT * INTO cust FROM billing.customers c WHERE c.id = inv.customer_id;
    PERFORM billing._bill_periods(sub, inv.billing_at, inv.billing_at);
    PERFORM billing._add_adjustments(sub, cust, inv.id, inv.billing_at);
    PERFORM billing._total_invoice(inv.customer_id, inv.id);
END $$;

-- Bills one subscription up to as_of, in the caller's transaction: creates the invoices of
-- every billing instant due and not yet billed, each with the late usage of periods already
-- invoiced, and finalizes those the billing entity's grace period does not keep as drafts.
-- A terminated subscription has no next invoice: late usage of its periods gets an invoice
-- of its own, at as_of. The subscription's row lock makes concurrent callers take turns;
-- the second finds everything billed. Returns the invoices created.
CREATE FUNCTION billing._bill_subscription(customer_id bigint, subscription_id bigint, as_of timestamptz)
RETURNS SETOF billing.invoices
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    sub billing.subscriptions;
    cust billing.customers;
    grace integer;
    created bigint[];
    invoice_id bigint;
    inv billing.invoices;
BEGIN
    SELECT * INTO sub FROM billing.subscriptions s WHERE s.customer_id = customer_id AND s.id = subscription_id FOR UPDATE;
    SELECT * INTO cust FROM billing.customers c WHERE c.id = customer_id;
    SELECT e.grace_period_days INTO grace FROM billing.billing_entities e WHERE e.id = cust.billing_entity_id;
    created := ARRAY(SELECT b FROM billing._bill_periods(sub, as_of) b ORDER BY b);
    IF created = '{}' AND sub.status = 'terminated' AND EXISTS (SELECT 1 FROM billing._late_windows(sub, cust, NULL)) THEN
        created := ARRAY[billing._invoice_at(sub, cust, as_of)];
    END IF;
    FOREACH invoice_id IN ARRAY created LOOP
        SELECT * INTO inv FROM billing.invoices i WHERE i.customer_id = customer_id AND i.id = invoice_id;
        PERFORM billing._add_adjustments(sub, cust, invoice_id, inv.billing_at);
        PERFORM billing._total_invoice(customer_id, invoice_id);
        SELECT * INTO inv FROM billing.invoices i WHERE i.customer_id = customer_id AND i.id = invoice_id;
        PERFORM billing._emit(customer_id, 'invoice.created', billing._invoice_event(inv));
        IF inv.billing_at + grace * interval '1 day' <= as_of THEN
            inv := billing._finalize(inv);
        END IF;
        RETURN NEXT inv;
    END LOOP;
    DELETE FROM billing.billing_failures f WHERE f.customer_id = customer_id AND f.subscription_id = subscription_id;
END $$;

-- The invoice with this id, locked, or 23503.
CREATE FUNCTION billing._invoice(invoice_id bigint) RETURNS billing.invoices
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    inv billing.invoices;
    owner bigint;
BEGIN
    -- The customer first, so that the lock is taken in that customer's shard on Citus.
    SELECT i.customer_id INTO owner FROM billing.invoices i WHERE i.id = invoice_id;
    SELECT * INTO inv FROM billing.invoices i WHERE i.customer_id = owner AND i.id = invoice_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM billing._unknown('invoice', invoice_id::text, 'list invoices in billing_bi.invoices');
    END IF;
    RETURN inv;
END $$;

CREATE FUNCTION billing._require_status(inv billing.invoices, wanted billing.invoice_status, action text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF inv.status <> wanted THEN
        PERFORM billing._raise('55000', format('invoice %s is %s', inv.id, inv.status),
            format('%s needs a %s invoice', action, wanted),
            CASE wanted WHEN 'draft' THEN 'finalized invoices are immutable; bill corrections on a later invoice'
                        ELSE 'finalize the draft first with billing.finalize_invoice' END);
    END IF;
END $$;

CREATE FUNCTION billing.bill_subscription(external_subscription_id text, as_of timestamptz DEFAULT now())
RETURNS SETOF billing.invoices
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    sub billing.subscriptions := billing._subscription(external_subscription_id);
BEGIN
    RETURN QUERY SELECT * FROM billing._bill_subscription(sub.customer_id, sub.id, as_of);
END $$;

CREATE FUNCTION billing.refresh_invoice(invoice_id bigint) RETURNS billing.invoices
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    inv billing.invoices := billing._invoice(invoice_id);
BEGIN
    PERFORM billing._require_status(inv, 'draft', 'refresh_invoice');
    PERFORM billing._refresh(inv);
    RETURN billing._invoice(invoice_id);
END $$;

CREATE FUNCTION billing.finalize_invoice(invoice_id bigint) RETURNS billing.invoices
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    inv billing.invoices := billing._invoice(invoice_id);
BEGIN
    PERFORM billing._require_status(inv, 'draft', 'finalize_invoice');
    PERFORM billing._refresh(inv);
    RETURN billing._finalize(billing._invoice(invoice_id));
END $$;

CREATE FUNCTION billing.void_invoice(invoice_id bigint) RETURNS billing.invoices
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    inv billing.invoices := billing._invoice(invoice_id);
BEGIN
    PERFORM billing._require_status(inv, 'finalized', 'void_invoice');
    IF inv.payment_status = 'succeeded' THEN
        PERFORM billing._raise('55000', format('invoice %s is paid', inv.id), 'payment_status is succeeded',
            'a paid invoice is corrected with a credit note, not voided');
    END IF;
    UPDATE billing.invoices i SET status = 'voided', voided_at = now()
    WHERE i.customer_id = inv.customer_id AND i.id = inv.id RETURNING * INTO inv;
    PERFORM billing._emit(inv.customer_id, 'invoice.voided', billing._invoice_event(inv));
    RETURN inv;
END $$;

CREATE FUNCTION billing.set_payment_status(invoice_id bigint, status text) RETURNS billing.invoices
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    inv billing.invoices := billing._invoice(invoice_id);
BEGIN
    PERFORM billing._check_label('payment_status', status, enum_range(NULL::billing.payment_status)::text[]);
    PERFORM billing._require_status(inv, 'finalized', 'set_payment_status');
    UPDATE billing.invoices i SET payment_status = status::billing.payment_status
    WHERE i.customer_id = inv.customer_id AND i.id = inv.id RETURNING * INTO inv;
    PERFORM billing._emit(inv.customer_id, 'invoice.payment_status_updated', billing._invoice_event(inv));
    RETURN inv;
END $$;

-- Everything needed to render or send an invoice, as one JSON document (shape in
-- docs/reference/invoicing.md).
CREATE FUNCTION billing.invoice_document(invoice_id bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    inv billing.invoices;
    document jsonb;
BEGIN
    SELECT * INTO inv FROM billing.invoices i WHERE i.id = invoice_id;
    IF NOT FOUND THEN
        PERFORM billing._unknown('invoice', invoice_id::text, 'list invoices in billing_bi.invoices');
    END IF;
    SELECT jsonb_build_object(
        'id', inv.id, 'number', inv.number, 'type', inv.invoice_type, 'status', inv.status,
        'payment_status', inv.payment_status, 'currency', inv.currency,
        'issuing_date', inv.issuing_date, 'due_date', inv.due_date, 'finalized_at', inv.finalized_at,
        'issuer', jsonb_build_object('code', e.code, 'name', e.name, 'address', e.address, 'tax_id', e.tax_id),
        'customer', jsonb_build_object('external_id', c.external_id, 'name', c.name, 'email', c.email,
                                       'address', c.address, 'tax_id', c.tax_id, 'timezone', c.timezone),
        'subscription', jsonb_build_object('external_id', s.external_id, 'plan_code', pl.code, 'plan_name', pl.name,
                                           'plan_version', v.version),
        'subscription_period', CASE WHEN inv.subscription_from IS NOT NULL THEN
            jsonb_build_object('from', inv.subscription_from, 'to', inv.subscription_to) END,
        'charges_period', CASE WHEN inv.charges_from IS NOT NULL THEN
            jsonb_build_object('from', inv.charges_from, 'to', inv.charges_to) END,
        'lines', coalesce((
            SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                       'fee_type', fe.fee_type, 'description', fe.description, 'metric_code', fe.billable_metric_code,
                       'charge_model', fe.charge_model, 'filter', fe.filter_values, 'group', fe.grouped_by,
                       'units', fe.units, 'events_count', CASE WHEN fe.fee_type IN ('charge', 'adjustment') THEN fe.events_count END,
                       'unit_amount', billing.round_money(fe.precise_unit_amount, inv.currency),
                       'precise_amount', fe.precise_amount, 'amount', fe.amount,
                       'details', fe.amount_details,
                       'from', fe.from_datetime, 'to', fe.to_datetime))
                   ORDER BY fe.fee_type, fe.charge_id NULLS FIRST, fe.charge_filter_id NULLS FIRST, fe.grouped_by::text COLLATE "C" NULLS FIRST, fe.id)
            FROM billing.fees fe WHERE fe.customer_id = inv.customer_id AND fe.invoice_id = inv.id AND fe.invoiceable), '[]'),
        'totals', jsonb_build_object(
            'fees_amount', inv.fees_amount, 'progressive_billing_credit_amount', inv.progressive_billing_credit_amount,
            'coupons_amount', inv.coupons_amount, 'sub_total_excluding_taxes', inv.sub_total_excluding_taxes,
            'taxes_amount', inv.taxes_amount, 'sub_total_including_taxes', inv.sub_total_including_taxes,
            'credit_notes_amount', inv.credit_notes_amount, 'prepaid_credit_amount', inv.prepaid_credit_amount,
            'total_amount', inv.total_amount))
    INTO document
    FROM billing.customers c
    JOIN billing.billing_entities e ON e.id = inv.billing_entity_id
    LEFT JOIN billing.subscriptions s ON s.customer_id = inv.customer_id AND s.id = inv.subscription_id
    LEFT JOIN billing.plan_versions v ON v.id = s.plan_version_id
    LEFT JOIN billing.plans pl ON pl.id = v.plan_id
    WHERE c.id = inv.customer_id;
    RETURN document;
END $$;

-- One unit of the billing run's work, in the caller's transaction: bill a subscription, or
-- (with draft_id) finalize that draft of it if it still is one. An error undoes this unit
-- only and is recorded in billing.billing_failures, so the run goes on with the next.
-- Custom plans: a run's session keeps its plans while the invoice tables grow under it, and
-- a generic plan made when they were empty (the first run of a new database) scans them
-- whole for every subscription; 10,000 subscriptions billed in 78 s that way, 35 s with
-- each statement planned for the tables as they are.
CREATE FUNCTION billing._attempt(customer_id bigint, subscription_id bigint, as_of timestamptz, draft_id bigint DEFAULT NULL)
RETURNS void
SET plan_cache_mode = force_custom_plan
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    failure_state text;
    failure_message text;
    failure_detail text;
BEGIN
    IF draft_id IS NULL THEN
        PERFORM billing._bill_subscription(customer_id, subscription_id, as_of);
    ELSIF (billing._invoice(draft_id)).status = 'draft' THEN
        PERFORM billing.finalize_invoice(draft_id);
    END IF;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS failure_state = RETURNED_SQLSTATE, failure_message = MESSAGE_TEXT, failure_detail = PG_EXCEPTION_DETAIL;
    INSERT INTO billing.billing_failures (customer_id, subscription_id, as_of, sqlstate, message, detail)
    VALUES (customer_id, subscription_id, as_of, failure_state,
            coalesce('finalizing invoice ' || draft_id || ': ', '') || failure_message, nullif(failure_detail, ''));
END $$;

-- The billing run. Bills each subscription in its own transaction (a crash loses at most
-- the one in flight; a rerun resumes, since billed instants are skipped), records a
-- subscription that fails in billing.billing_failures and goes on, then finalizes the
-- drafts whose grace period is over. One run at a time: a second run while one holds the
-- lock returns at once (pg_cron's next tick picks up anything left).
CREATE PROCEDURE billing.run_billing(as_of timestamptz DEFAULT now())
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    last_customer bigint := -1;
    last_subscription bigint := -1;
    next_sub record;
BEGIN
    IF NOT pg_try_advisory_lock(hashtext('pg_billing: billing run')) THEN
        RAISE NOTICE 'another billing run is in progress: this one does nothing';
        RETURN;
    END IF;
    PERFORM billing.activate_subscriptions(as_of);
    COMMIT;
    -- Keyset walk: one subscription's key in memory at a time.
    LOOP
        SELECT s.customer_id, s.id INTO next_sub FROM billing.subscriptions s
        WHERE (s.customer_id, s.id) > (last_customer, last_subscription) AND s.status <> 'pending'
        ORDER BY s.customer_id, s.id LIMIT 1;
        EXIT WHEN NOT FOUND;
        last_customer := next_sub.customer_id;
        last_subscription := next_sub.id;
        PERFORM billing._attempt(next_sub.customer_id, next_sub.id, as_of);
        COMMIT;
    END LOOP;
    CALL billing.finalize_drafts(as_of);
    PERFORM pg_advisory_unlock(hashtext('pg_billing: billing run'));
END $$;

-- Finalizes the drafts whose billing entity's grace period is over, each in its own
-- transaction (refreshed first, so late events within the period land on them). A draft
-- finalized meanwhile by billing.finalize_invoice is skipped; one that fails is recorded in
-- billing.billing_failures and left a draft.
CREATE PROCEDURE billing.finalize_drafts(as_of timestamptz DEFAULT now())
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    last_id bigint := -1;
    draft record;
BEGIN
    LOOP
        SELECT i.customer_id, i.subscription_id, i.id INTO draft
        FROM billing.invoices i JOIN billing.billing_entities e ON e.id = i.billing_entity_id
        WHERE i.status = 'draft' AND i.id > last_id AND i.billing_at + e.grace_period_days * interval '1 day' <= as_of
        ORDER BY i.id LIMIT 1;
        EXIT WHEN NOT FOUND;
        last_id := draft.id;
        PERFORM billing._attempt(draft.customer_id, draft.subscription_id, as_of, draft.id);
        COMMIT;
    END LOOP;
END $$;

SELECT pg_catalog.pg_extension_config_dump('billing.invoices', '');
SELECT pg_catalog.pg_extension_config_dump('billing.invoices_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.fees', '');
SELECT pg_catalog.pg_extension_config_dump('billing.fees_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.billed_windows', '');
SELECT pg_catalog.pg_extension_config_dump('billing.invoice_sequences', '');
SELECT pg_catalog.pg_extension_config_dump('billing.billing_failures', '');
SELECT pg_catalog.pg_extension_config_dump('billing.billing_failures_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.outbox', '');
SELECT pg_catalog.pg_extension_config_dump('billing.outbox_id_seq', '');

REVOKE ALL ON FUNCTION billing._invoice_immutable(), billing._fee_immutable(), billing._emit(bigint, text, jsonb),
    billing._invoice_event(billing.invoices), billing._invoice_at(billing.subscriptions, billing.customers, timestamptz),
    billing._add_fee(billing.subscriptions, billing.customers, bigint, billing.fee_type, text, text, numeric, timestamptz, timestamptz, numeric, bigint, boolean),
    billing._add_base_fee(billing.subscriptions, billing.customers, bigint, billing.plan_versions, text, date, date, integer, timestamptz, timestamptz),
    billing._window_events(bigint, bigint, bigint, timestamptz, timestamptz, text),
    billing._record_window(billing.subscriptions, billing.customers, bigint, timestamptz, timestamptz, boolean, bigint),
    billing._usage_fee_key(text, bigint, bigint, jsonb, timestamptz, timestamptz),
    billing._add_usage_fees(billing.subscriptions, billing.customers, bigint, timestamptz, timestamptz, integer, integer),
    billing._late_windows(billing.subscriptions, billing.customers, bigint),
    billing._add_adjustments(billing.subscriptions, billing.customers, bigint, timestamptz),
    billing._bill_periods(billing.subscriptions, timestamptz, timestamptz), billing._total_invoice(bigint, bigint),
    billing._zero_padded(bigint, integer), billing._finalize(billing.invoices), billing._refresh(billing.invoices),
    billing._bill_subscription(bigint, bigint, timestamptz), billing._attempt(bigint, bigint, timestamptz, bigint), billing._invoice(bigint),
    billing._require_status(billing.invoices, billing.invoice_status, text),
    billing._period_share(numeric, integer, integer), billing._shortfall(numeric, numeric) FROM PUBLIC;
REVOKE ALL ON PROCEDURE billing.run_billing(timestamptz), billing.finalize_drafts(timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION billing.bill_subscription(text, timestamptz), billing.refresh_invoice(bigint), billing.finalize_invoice(bigint),
    billing.void_invoice(bigint), billing.set_payment_status(bigint, text) FROM PUBLIC;

-- Scale-out on Citus: billing.distribute() turns a pg_billing database on a Citus
-- coordinator into a distributed one. Per-customer tables (customers, subscriptions,
-- events, usage_rollups, invoices, fees, billed_windows, billing_failures, outbox) are
-- distributed by customer and colocated, so one customer's rows live in one shard group;
-- the catalog, the two directories and the per-entity invoice counters become reference
-- tables, copied to every node; rejected_events and the COPY intake and staging tables stay
-- local to the coordinator, where ingestion runs.
CREATE FUNCTION billing.distribute(shard_count integer DEFAULT NULL)
RETURNS TABLE (table_name text, placement text)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    reference_tables text[] := ARRAY['billing_entities', 'billable_metrics', 'plans', 'plan_versions', 'charges',
                                     'charge_filters', 'customer_directory', 'subscription_directory', 'invoice_sequences'];
    per_customer_tables text[] := ARRAY['subscriptions', 'events', 'usage_rollups', 'invoices', 'fees', 'billed_windows',
                                        'billing_failures', 'outbox'];
    local_tables text[] := ARRAY['rejected_events', 'event_staging', 'event_intake'];
    foreign_keys text[];
    undo text;
    name text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'citus') THEN
        PERFORM billing._raise('55000', 'citus is not installed in this database',
            'billing.distribute() distributes pg_billing over a Citus cluster',
            'preload citus on every node (shared_preload_libraries), CREATE EXTENSION citus, add the workers with citus_add_node, then call billing.distribute()');
    END IF;
    -- Without a copy of the reference tables on the coordinator, the catalog cache's
    -- invalidation trigger would fire only on the workers, and the coordinator's sessions
    -- would keep ingesting against a terminated subscription.
    IF NOT EXISTS (SELECT 1 FROM pg_dist_node WHERE groupid = 0) THEN
        PERFORM billing._raise('55000', 'the coordinator is not in the Citus cluster''s node list',
            'billing.distribute() needs a copy of the reference tables on the coordinator, where ingestion runs',
            'run SELECT citus_set_coordinator_host(''<this host>'', <port>) on the coordinator, then call billing.distribute()');
    END IF;
    IF shard_count IS NOT NULL AND shard_count < 1 THEN
        PERFORM billing._invalid('shard_count must be at least 1', format('got %s', shard_count),
            'leave it NULL for citus.shard_count, or give the number of shards per distributed table');
    END IF;
    IF EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'billing.customers'::regclass) THEN
        PERFORM billing._raise('55000', 'pg_billing is already distributed in this database',
            'billing.customers is a distributed table', 'nothing to do: the shard count of pg_billing''s tables is final');
    END IF;

    -- Citus converts the tables a foreign key links before it distributes one of them, which
    -- pg_billing's extension-owned tables and sequences refuse: the foreign keys are taken
    -- off, on every node (the workers use pg_billing's own tables as their shells), and put
    -- back once the tables are distributed.
    SELECT array_agg(format('ALTER TABLE %s ADD CONSTRAINT %I %s', c.conrelid::regclass, c.conname, pg_get_constraintdef(c.oid))
                     ORDER BY c.conname),
           string_agg(format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I;', c.conrelid::regclass, c.conname), ' ')
    INTO foreign_keys, undo
    FROM pg_catalog.pg_constraint c
    WHERE c.contype = 'f' AND c.connamespace = 'billing'::regnamespace;
    PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    -- Citus's notices about copying the rows into the shards (then freed here) are noise.
    PERFORM set_config('client_min_messages', 'warning', true);
    IF undo IS NOT NULL THEN
        PERFORM run_command_on_workers('SET citus.enable_ddl_propagation TO off; ' || undo);
        PERFORM set_config('citus.enable_ddl_propagation', 'off', true);
        EXECUTE undo;
        PERFORM set_config('citus.enable_ddl_propagation', 'on', true);
    END IF;

    -- The catalog cache's invalidation trigger stays on the catalog tables and the
    -- subscription directory, which become reference tables: Citus copies it to every
    -- node's copy, the coordinator's included, where it fires; it touches no table.
    PERFORM set_config('citus.enable_unsafe_triggers', 'on', true);
    FOREACH name IN ARRAY reference_tables LOOP
        PERFORM create_reference_table(format('billing.%I', name)::regclass);
        PERFORM truncate_local_data_after_distributing_table(format('billing.%I', name)::regclass);
        table_name := 'billing.' || name; placement := 'reference'; RETURN NEXT;
    END LOOP;
    PERFORM create_distributed_table('billing.customers', 'id',
        shard_count => coalesce(shard_count, current_setting('citus.shard_count')::integer));
    PERFORM truncate_local_data_after_distributing_table('billing.customers');
    table_name := 'billing.customers'; placement := 'distributed by id (the customer)'; RETURN NEXT;
    FOREACH name IN ARRAY per_customer_tables LOOP
        PERFORM create_distributed_table(format('billing.%I', name)::regclass, 'customer_id', colocate_with => 'billing.customers');
        PERFORM truncate_local_data_after_distributing_table(format('billing.%I', name)::regclass);
        table_name := 'billing.' || name; placement := 'distributed by customer_id, colocated with billing.customers'; RETURN NEXT;
    END LOOP;
    FOREACH name IN ARRAY local_tables LOOP
        table_name := 'billing.' || name; placement := 'local to the coordinator'; RETURN NEXT;
    END LOOP;

    PERFORM set_config('citus.enable_unsafe_triggers', 'off', true);
    FOREACH name IN ARRAY coalesce(foreign_keys, '{}') LOOP
        EXECUTE name;
    END LOOP;
END $$;
REVOKE ALL ON FUNCTION billing.distribute(integer) FROM PUBLIC;

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

-- Invoices as issued: every invoice (drafts, finalized and voided), with its totals.
CREATE VIEW billing_bi.invoices AS
SELECT i.id AS invoice_id, i.number, c.external_id AS customer_external_id, s.external_id AS subscription_external_id,
       p.code AS plan_code, i.invoice_type::text AS invoice_type, i.status::text AS status,
       i.payment_status::text AS payment_status, i.currency, i.issuing_date, i.due_date,
       i.charges_from, i.charges_to, i.fees_amount, i.coupons_amount, i.taxes_amount, i.credit_notes_amount,
       i.prepaid_credit_amount, i.total_amount, i.created_at, i.finalized_at, i.voided_at
FROM billing.invoices i
JOIN billing.customers c ON c.id = i.customer_id
LEFT JOIN billing.subscriptions s ON s.customer_id = i.customer_id AND s.id = i.subscription_id
LEFT JOIN billing.plan_versions v ON v.id = s.plan_version_id
LEFT JOIN billing.plans p ON p.id = v.plan_id;

-- The lines of every invoice: its invoiceable fees.
CREATE VIEW billing_bi.invoice_lines AS
SELECT f.invoice_id, i.number AS invoice_number, i.status::text AS invoice_status, c.external_id AS customer_external_id,
       f.fee_type::text AS fee_type, f.description, f.billable_metric_code AS metric_code, f.charge_model,
       f.filter_values, f.grouped_by, f.units, f.events_count, f.precise_unit_amount AS unit_amount, f.precise_amount,
       f.amount, i.currency, f.from_datetime, f.to_datetime
FROM billing.fees f
JOIN billing.invoices i ON i.customer_id = f.customer_id AND i.id = f.invoice_id
JOIN billing.customers c ON c.id = f.customer_id
WHERE f.invoiceable;

-- Revenue is what finalized invoices (not voided ones) bill, by the month of their issuing
-- date, per currency.
CREATE VIEW billing_bi.revenue_by_month AS
SELECT date_trunc('month', i.issuing_date)::date AS month, i.currency, count(*)::bigint AS invoices,
       sum(i.fees_amount) AS fees_amount, sum(i.taxes_amount) AS taxes_amount, sum(i.total_amount) AS total_amount
FROM billing.invoices i WHERE i.status = 'finalized'
GROUP BY 1, 2;

CREATE VIEW billing_bi.revenue_by_customer AS
SELECT date_trunc('month', i.issuing_date)::date AS month, c.external_id AS customer_external_id, i.currency,
       count(*)::bigint AS invoices, sum(i.fees_amount) AS fees_amount, sum(i.total_amount) AS total_amount
FROM billing.invoices i JOIN billing.customers c ON c.id = i.customer_id
WHERE i.status = 'finalized'
GROUP BY 1, 2, 3;

CREATE VIEW billing_bi.revenue_by_plan AS
SELECT date_trunc('month', i.issuing_date)::date AS month, p.code AS plan_code, i.currency,
       sum(f.amount) FILTER (WHERE f.fee_type = 'subscription') AS subscription_amount,
       sum(f.amount) FILTER (WHERE f.fee_type <> 'subscription') AS usage_amount, sum(f.amount) AS amount
FROM billing.fees f
JOIN billing.invoices i ON i.customer_id = f.customer_id AND i.id = f.invoice_id AND i.status = 'finalized'
JOIN billing.subscriptions s ON s.customer_id = f.customer_id AND s.id = f.subscription_id
JOIN billing.plan_versions v ON v.id = s.plan_version_id
JOIN billing.plans p ON p.id = v.plan_id
WHERE f.invoiceable
GROUP BY 1, 2, 3;

CREATE VIEW billing_bi.revenue_by_metric AS
SELECT date_trunc('month', i.issuing_date)::date AS month, f.billable_metric_code AS metric_code, i.currency,
       sum(f.units) AS units, sum(f.events_count)::bigint AS events, sum(f.amount) AS amount
FROM billing.fees f
JOIN billing.invoices i ON i.customer_id = f.customer_id AND i.id = f.invoice_id AND i.status = 'finalized'
WHERE f.invoiceable AND f.billable_metric_code IS NOT NULL
GROUP BY 1, 2, 3;

-- Monthly recurring revenue from the base fees of active subscriptions, the plan amount
-- brought to a month (weekly × 52 / 12, quarterly / 3, semiannual / 6, yearly / 12).
CREATE VIEW billing_bi.mrr AS
SELECT p.code AS plan_code, v.currency, count(*)::bigint AS active_subscriptions,
       sum(v.amount * CASE v.interval WHEN 'weekly' THEN 52 / 12.0 WHEN 'monthly' THEN 1 WHEN 'quarterly' THEN 1 / 3.0
                                      WHEN 'semiannual' THEN 1 / 6.0 ELSE 1 / 12.0 END) AS mrr
FROM billing.subscriptions s
JOIN billing.plan_versions v ON v.id = s.plan_version_id
JOIN billing.plans p ON p.id = v.plan_id
WHERE s.status = 'active'
GROUP BY 1, 2;

-- Drafts not yet finalized, with the day their grace period ends.
CREATE VIEW billing_bi.draft_invoices AS
SELECT i.id AS invoice_id, c.external_id AS customer_external_id, s.external_id AS subscription_external_id,
       i.currency, i.issuing_date, i.billing_at + e.grace_period_days * interval '1 day' AS finalizes_at,
       i.total_amount, i.refreshed_at
FROM billing.invoices i
JOIN billing.customers c ON c.id = i.customer_id
JOIN billing.billing_entities e ON e.id = i.billing_entity_id
LEFT JOIN billing.subscriptions s ON s.customer_id = i.customer_id AND s.id = i.subscription_id
WHERE i.status = 'draft';

GRANT USAGE ON SCHEMA billing_bi TO billing_reader, billing_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA billing_bi TO billing_reader, billing_admin;

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

-- The admin: the catalog, usage, invoicing and every table of schema billing (not billing.distribute(),
-- which stays with superusers).
GRANT USAGE ON SCHEMA billing TO billing_admin;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES ON ALL TABLES IN SCHEMA billing TO billing_admin;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA billing TO billing_admin;
GRANT EXECUTE ON ALL ROUTINES IN SCHEMA billing TO billing_admin;
REVOKE EXECUTE ON FUNCTION billing.distribute(integer) FROM billing_admin;

COMMENT ON FUNCTION billing.distribute(integer) IS 'On a Citus coordinator: distributes pg_billing by customer in one call (customers, subscriptions, events, usage_rollups, invoices, fees, billed_windows, billing_failures and outbox distributed and colocated, shard_count shards each, default citus.shard_count; the catalog, the directories and invoice_sequences as reference tables; rejected_events and the COPY tables local). Returns each table with its placement. 55000 without Citus or when already distributed.';
COMMENT ON SCHEMA billing_bi IS 'pg_billing for BI tools: views with plain typed columns and stable names; billing_reader may read them and nothing else.';
COMMENT ON VIEW billing_bi.customers IS 'One row per customer: external id, name, email, currency, time zone, billing entity, creation time.';
COMMENT ON VIEW billing_bi.subscriptions IS 'One row per subscription: its customer, plan code and version, interval, plan amount and currency, status, billing time and dates.';
COMMENT ON VIEW billing_bi.usage_by_day IS 'Usage per customer-local day, subscription and metric, from the day rollups: events, sum and maximum of the values.';
COMMENT ON VIEW billing_bi.ingestion_health IS 'What ingestion did with the events sent, per UTC day of ingestion: stored events per metric (outcome accepted) and rejects per metric code, SQLSTATE and reason (outcome rejected). Duplicates are not stored again and not counted.';
COMMENT ON FUNCTION billing.schedule(text) IS 'Creates (or replaces) pg_billing''s pg_cron jobs on the cron schedule billing_cron (default ''5 * * * *''): the billing run, the activation of pending subscriptions and the finalization of drafts whose grace period is over. Needs pg_cron in this database (55000 otherwise; 22023 for an invalid schedule). Returns the jobs.';
COMMENT ON FUNCTION billing.unschedule() IS 'Removes pg_billing''s pg_cron jobs; returns how many it removed. Needs pg_cron in this database (55000 otherwise).';
COMMENT ON VIEW billing_bi.invoices IS 'One row per invoice (draft, finalized or voided): number, customer, subscription, plan, type, status, payment status, currency, dates, charges period and totals.';
COMMENT ON VIEW billing_bi.invoice_lines IS 'One row per invoice line (invoiceable fee): invoice, fee type, description, metric, charge model, filter, group, units, events, unit amount, exact and rounded amount, period.';
COMMENT ON VIEW billing_bi.revenue_by_month IS 'Finalized invoices per month of issuing date and currency: count, fees, taxes and totals (voided invoices excluded).';
COMMENT ON VIEW billing_bi.revenue_by_customer IS 'Finalized invoices per month of issuing date, customer and currency: count, fees and totals.';
COMMENT ON VIEW billing_bi.revenue_by_plan IS 'Invoiced fees of finalized invoices per month of issuing date, plan and currency: base fees, usage (and minimums) and both together.';
COMMENT ON VIEW billing_bi.revenue_by_metric IS 'Invoiced usage fees of finalized invoices per month of issuing date, metric and currency: units, events, amount.';
COMMENT ON VIEW billing_bi.mrr IS 'Monthly recurring revenue of active subscriptions per plan and currency: the plan amounts brought to a month.';
COMMENT ON VIEW billing_bi.draft_invoices IS 'Drafts not yet finalized: customer, subscription, issuing date, when the grace period ends, the total as last refreshed.';

-- Invoicing
COMMENT ON TYPE billing.invoice_type IS 'What an invoice bills: subscription (a subscription''s periods).';
COMMENT ON TYPE billing.invoice_status IS 'An invoice''s lifecycle: draft (recomputable), finalized (numbered, immutable), voided.';
COMMENT ON TYPE billing.payment_status IS 'What the application reports of an invoice''s payment: pending, succeeded, failed.';
COMMENT ON TYPE billing.fee_type IS 'What a fee bills: subscription (base fee), charge (usage), charge_minimum (a charge''s minimum spend true-up), commitment (the plan''s minimum commitment true-up), adjustment (late usage of a finalized period).';
COMMENT ON TABLE billing.invoices IS 'One invoice per subscription and billing instant (billing_at: a period''s close, the start, a trial''s end or the termination), unique on (customer_id, subscription_id, billing_at); totals are sums of rounded fees. Finalized and voided invoices are immutable but for payment_status and voiding.';
COMMENT ON TABLE billing.fees IS 'What an invoice bills, one row per fee: exact amount (precise_amount) and amount rounded half-up to the currency; fee_key is unique per subscription, so nothing is billed twice. invoiceable = false fees are kept but not invoiced.';
COMMENT ON TABLE billing.billed_windows IS 'The usage windows each invoice computed and the events they held just before: how the billing run finds events that arrived for an already finalized period.';
COMMENT ON TABLE billing.invoice_sequences IS 'The last invoice number given per billing entity and month (entities numbering per_entity); locked while a number is taken, so numbers are gapless.';
COMMENT ON TABLE billing.billing_failures IS 'Subscriptions the billing run could not bill, with as_of, SQLSTATE, message and detail; a later successful billing of the subscription removes its rows.';
COMMENT ON TABLE billing.outbox IS 'Billing events for applications (invoice.created, invoice.finalized, invoice.voided, invoice.payment_status_updated), written in the transaction of the change and announced by pg_notify(''pg_billing'', id). Consume with DELETE ... RETURNING.';
COMMENT ON PROCEDURE billing.run_billing(timestamptz) IS 'The billing run: activates pending subscriptions, bills every subscription due as of as_of (one transaction each; a failure is recorded in billing.billing_failures and the run goes on), then finalizes drafts whose grace period is over. Call it outside a transaction block. A second run while one is in progress returns at once.';
COMMENT ON PROCEDURE billing.finalize_drafts(timestamptz) IS 'Refreshes and finalizes every draft whose billing entity''s grace period is over as of as_of, one transaction each.';
COMMENT ON FUNCTION billing.bill_subscription(text, timestamptz) IS 'Bills one subscription up to as_of in the caller''s transaction (what the billing run does for each); returns the invoices created. 23503 for an unknown subscription.';
COMMENT ON FUNCTION billing.refresh_invoice(bigint) IS 'Recomputes a draft''s fees and totals from the usage as it is now (late events within the period land there). 55000 unless the invoice is a draft.';
COMMENT ON FUNCTION billing.finalize_invoice(bigint) IS 'Refreshes a draft, then finalizes it: number, due date, immutable from then on. 55000 unless the invoice is a draft.';
COMMENT ON FUNCTION billing.void_invoice(bigint) IS 'Voids a finalized invoice that is not paid; its fees stay billed (never billed again). 55000 otherwise.';
COMMENT ON FUNCTION billing.set_payment_status(bigint, text) IS 'Records a finalized invoice''s payment status: pending, succeeded or failed. 22023 for another word, 55000 unless finalized.';
COMMENT ON FUNCTION billing.invoice_document(bigint) IS 'Everything needed to render or send an invoice, as one JSON document (issuer, customer, subscription, periods, lines with tier details, totals, number, dates; shape in docs/reference/invoicing.md).';
COMMENT ON FUNCTION billing._invoice_immutable() IS 'Private: trigger refusing changes to finalized and voided invoices (55000), but for payment_status and voiding.';
COMMENT ON FUNCTION billing._fee_immutable() IS 'Private: trigger refusing changes to the fees of finalized and voided invoices (55000).';

