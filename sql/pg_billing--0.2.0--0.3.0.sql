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
                      'billing._metric_event_values(bigint, bigint, bigint, timestamptz, timestamptz, boolean)')) d(old_form, new_form)
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
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    ch billing.charges;
    metric billing.billable_metrics;
    model text;
    period_days integer;
    -- Whether the charge has filters and pricing group keys: without them every usage row
    -- is in the default bucket of one group, and 20,000 groups' lookups are skipped.
    filtered boolean;
    grouped boolean;
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
        filtered := EXISTS (SELECT 1 FROM billing.charge_filters cf WHERE cf.charge_id = ch.id);
        grouped := ch.pricing_group_keys <> '{}';
        RETURN QUERY
        WITH per_dims AS (
            SELECT u.dims, u.units, u.events_count, CASE WHEN filtered THEN billing._charge_filter(ch.id, u.dims) END AS filter_id,
                   CASE WHEN grouped THEN billing._group_key(ch.pricing_group_keys, u.dims) ELSE '{}'::jsonb END AS grouped_by
            FROM billing._metric_units(sub.customer_id, sub.id, metric, window_from, window_to, cust.timezone) u
            WHERE NOT ch.prorated
            UNION ALL
            SELECT u.dims, u.day_units, u.events_count, CASE WHEN filtered THEN billing._charge_filter(ch.id, u.dims) END,
                   CASE WHEN grouped THEN billing._group_key(ch.pricing_group_keys, u.dims) ELSE '{}'::jsonb END
            FROM billing._metric_day_units(sub.customer_id, sub.id, metric, window_from, window_to, cust.timezone) u
            WHERE ch.prorated
        ), buckets AS (
            SELECT p.filter_id, p.grouped_by, sum(p.units) AS units, sum(p.events_count)::bigint AS events_count
            FROM per_dims p GROUP BY p.filter_id, p.grouped_by
            UNION ALL
            -- Every filter and the default bucket appear, with zero usage when nothing matched.
            SELECT f.id, '{}'::jsonb, 0, 0 FROM (
                SELECT cf.id FROM billing.charge_filters cf WHERE cf.charge_id = ch.id UNION ALL SELECT NULL) f
            WHERE NOT EXISTS (SELECT 1 FROM per_dims p WHERE p.filter_id IS NOT DISTINCT FROM f.id)
        ), values_per_bucket AS (
            SELECT CASE WHEN filtered THEN billing._charge_filter(ch.id, v.dims) END AS filter_id, CASE WHEN grouped THEN billing._group_key(ch.pricing_group_keys, v.dims) ELSE '{}'::jsonb END AS grouped_by,
                   array_agg(x ORDER BY v.ord, x.ord) AS event_values
            FROM (SELECT ev.*, row_number() OVER () AS ord
                  FROM billing._metric_event_values(sub.customer_id, sub.id, metric.id, CASE WHEN metric.recurring THEN '-infinity' ELSE window_from END,
                                                    window_to, model = 'dynamic') ev
                  WHERE model IN ('percentage', 'dynamic')) v,
                 unnest(v.event_values) WITH ORDINALITY x(x, ord)
            GROUP BY 1, 2
        )
        SELECT ch.id, metric.code, metric.aggregation::text, model, b.filter_id, f."values", b.grouped_by,
               trim_scale(r.units), b.events_count,
               CASE WHEN model IN ('percentage', 'dynamic')
                    THEN billing.amount(coalesce(f.price, ch.price)::billing.price, coalesce(vb.event_values, '{}'), cust.currency)
                    ELSE billing.amount(coalesce(f.price, ch.price)::billing.price, r.units) END,
               cust.currency, window_from, window_to
        FROM buckets b
        CROSS JOIN LATERAL (SELECT billing._round_units(CASE WHEN ch.prorated THEN billing._prorate(b.units, period_days) ELSE b.units END,
                                                        metric.rounding_function::text, metric.rounding_precision) AS units) r
        LEFT JOIN billing.charge_filters f ON f.id = b.filter_id
        LEFT JOIN values_per_bucket vb ON vb.filter_id IS NOT DISTINCT FROM b.filter_id AND vb.grouped_by = b.grouped_by
        ORDER BY b.filter_id NULLS FIRST, b.grouped_by;
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

-- Scale-out on Citus: billing.distribute() turns a pg_billing database on a Citus
-- coordinator into a distributed one. Per-customer tables (customers, subscriptions,
-- events, usage_rollups) are distributed by customer and colocated, so one customer's rows
-- live in one shard group; the catalog and the two directories become reference tables,
-- copied to every node; rejected_events and the COPY intake and staging tables stay local to
-- the coordinator, where ingestion runs.
CREATE FUNCTION billing.distribute(shard_count integer DEFAULT NULL)
RETURNS TABLE (table_name text, placement text)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    reference_tables text[] := ARRAY['billing_entities', 'billable_metrics', 'plans', 'plan_versions', 'charges',
                                     'charge_filters', 'customer_directory', 'subscription_directory'];
    per_customer_tables text[] := ARRAY['subscriptions', 'events', 'usage_rollups'];
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
COMMENT ON FUNCTION billing.distribute(integer) IS 'On a Citus coordinator: distributes pg_billing by customer in one call (customers, subscriptions, events and usage_rollups distributed and colocated, shard_count shards each, default citus.shard_count; the catalog and the directories as reference tables; rejected_events and the COPY tables local). Returns each table with its placement. 55000 without Citus or when already distributed.';

-- Scheduling with pg_cron: the jobs that keep pg_billing's periodic work running, each
-- under a name of its own, so that scheduling again replaces them and unscheduling finds
-- them. pg_cron runs a job in the database it was scheduled from, as the role that
-- scheduled it.

-- The jobs, in one place: their names and commands.
CREATE FUNCTION billing._scheduled_jobs() RETURNS TABLE (job_name text, command text)
LANGUAGE sql IMMUTABLE AS $$
    VALUES ('pg_billing: activate subscriptions', 'SELECT billing.activate_subscriptions()')
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
COMMENT ON FUNCTION billing.schedule(text) IS 'Creates (or replaces) pg_billing''s pg_cron jobs on the cron schedule billing_cron (default ''5 * * * *''): today the activation of pending subscriptions. Needs pg_cron in this database (55000 otherwise; 22023 for an invalid schedule). Returns the jobs.';
COMMENT ON FUNCTION billing.unschedule() IS 'Removes pg_billing''s pg_cron jobs; returns how many it removed. Needs pg_cron in this database (55000 otherwise).';

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
COMMENT ON SCHEMA billing_bi IS 'pg_billing for BI tools: views with plain typed columns and stable names; billing_reader may read them and nothing else.';
COMMENT ON VIEW billing_bi.customers IS 'One row per customer: external id, name, email, currency, time zone, billing entity, creation time.';
COMMENT ON VIEW billing_bi.subscriptions IS 'One row per subscription: its customer, plan code and version, interval, plan amount and currency, status, billing time and dates.';
COMMENT ON VIEW billing_bi.usage_by_day IS 'Usage per customer-local day, subscription and metric, from the day rollups: events, sum and maximum of the values.';
COMMENT ON VIEW billing_bi.ingestion_health IS 'What ingestion did with the events sent, per UTC day of ingestion: stored events per metric (outcome accepted) and rejects per metric code, SQLSTATE and reason (outcome rejected). Duplicates are not stored again and not counted.';
