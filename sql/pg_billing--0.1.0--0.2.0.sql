-- pg_billing 0.1.0 → 0.2.0, frozen with the 0.2.0 release: never edited. Test tier 9
-- checks that a database upgraded through it has exactly the schema of a fresh install.
\echo Use "ALTER EXTENSION pg_billing UPDATE TO '0.2.0'" to load this file. \quit

-- Raises an error with pg_billing's shape from PL/pgSQL (lowercase message, DETAIL with the
-- offending value, HINT with the fix), as the Rust side raises its own.
CREATE FUNCTION billing._raise(sqlstate text, message text, detail text, hint text) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
BEGIN
    RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message, DETAIL = detail, HINT = hint;
END $$;

CREATE OR REPLACE FUNCTION billing._invalid(message text, detail text, hint text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM billing._raise('22023', message, detail, hint);
END $$;

CREATE OR REPLACE FUNCTION billing._unknown(kind text, key text, hint text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM billing._raise('23503', format('unknown %s "%s"', kind, key),
                           format('no %s has the code or external id %s', kind, key), hint);
END $$;

CREATE OR REPLACE FUNCTION billing.terminate_subscription(external_id text, terminated_at timestamptz DEFAULT now())
RETURNS billing.subscriptions
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    subscription billing.subscriptions;
BEGIN
    SELECT * INTO subscription FROM billing.subscriptions s WHERE s.external_id = terminate_subscription.external_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM billing._unknown('subscription', external_id, 'check the external_id');
    END IF;
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
    WHERE s.id = subscription.id RETURNING * INTO subscription;
    RETURN subscription;
END $$;

REVOKE ALL ON FUNCTION billing._raise(text, text, text, text) FROM PUBLIC;

-- Enumerations get one home each: an enum type the tables store, whose labels the
-- functions taking text check against (the messages are those of 0.1.0). The CHECKs
-- that spelt the labels out go; those comparing with a label are rebuilt on the type.
CREATE TYPE billing.invoice_numbering AS ENUM ('per_customer', 'per_entity');
CREATE TYPE billing.aggregation AS ENUM ('count', 'sum', 'max', 'unique_count', 'latest', 'weighted_sum');
CREATE TYPE billing.rounding_function AS ENUM ('round', 'ceil', 'floor');
CREATE TYPE billing.billing_interval AS ENUM ('weekly', 'monthly', 'quarterly', 'semiannual', 'yearly');
CREATE TYPE billing.billing_time AS ENUM ('calendar', 'anniversary');
CREATE TYPE billing.subscription_status AS ENUM ('pending', 'active', 'terminated');

ALTER TABLE billing.billing_entities
    DROP CONSTRAINT billing_entities_numbering_check,
    ALTER COLUMN numbering DROP DEFAULT,
    ALTER COLUMN numbering TYPE billing.invoice_numbering USING numbering::billing.invoice_numbering,
    ALTER COLUMN numbering SET DEFAULT 'per_customer';
ALTER TABLE billing.billable_metrics
    DROP CONSTRAINT billable_metrics_aggregation_check,
    DROP CONSTRAINT billable_metrics_rounding_function_check,
    DROP CONSTRAINT billable_metrics_check,
    DROP CONSTRAINT billable_metrics_check1,
    ALTER COLUMN aggregation TYPE billing.aggregation USING aggregation::billing.aggregation,
    ALTER COLUMN rounding_function TYPE billing.rounding_function USING rounding_function::billing.rounding_function,
    ADD CONSTRAINT billable_metrics_check CHECK (aggregation = 'count' OR field_name IS NOT NULL),
    ADD CONSTRAINT billable_metrics_check1 CHECK (NOT recurring OR aggregation IN ('sum', 'unique_count', 'weighted_sum'));
ALTER TABLE billing.plan_versions
    DROP CONSTRAINT plan_versions_interval_check,
    ALTER COLUMN interval TYPE billing.billing_interval USING interval::billing.billing_interval;
ALTER TABLE billing.subscriptions
    DROP CONSTRAINT subscriptions_status_check,
    DROP CONSTRAINT subscriptions_billing_time_check,
    ALTER COLUMN status TYPE billing.subscription_status USING status::billing.subscription_status,
    ALTER COLUMN billing_time DROP DEFAULT,
    ALTER COLUMN billing_time TYPE billing.billing_time USING billing_time::billing.billing_time,
    ALTER COLUMN billing_time SET DEFAULT 'calendar';

-- Prices are stored as their canonical JSON, not as the library's serialized struct: plain
-- data for every client, pg_dump and pg_upgrade, whatever later releases call things in Rust.
ALTER TABLE billing.charges
    ALTER COLUMN price TYPE jsonb USING billing.price_to_jsonb(price),
    ADD CONSTRAINT charges_price_check CHECK (billing.price(price)::jsonb = price);
ALTER TABLE billing.charge_filters
    ALTER COLUMN price TYPE jsonb USING billing.price_to_jsonb(price),
    ADD CONSTRAINT charge_filters_price_check CHECK (billing.price(price)::jsonb = price);


-- Raises 22023 unless value is one of labels (an enum type's, as text), naming what the
-- value is for: 'unknown aggregation "avg"', DETAIL 'got avg', HINT 'use count, sum ... or
-- weighted_sum'.
CREATE FUNCTION billing._check_label(what text, value text, labels text[]) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
#variable_conflict use_variable
BEGIN
    IF value IS NULL OR NOT value = ANY (labels) THEN
        PERFORM billing._invalid(format('unknown %s "%s"', what, value), format('got %s', value),
            format('use %s or %s', array_to_string(labels[1:cardinality(labels) - 1], ', '), labels[cardinality(labels)]));
    END IF;
END $$;
REVOKE ALL ON FUNCTION billing._check_label(text, text, text[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION billing.create_billing_entity(
    code text, name text, default_currency text DEFAULT 'USD', timezone text DEFAULT 'UTC',
    invoice_prefix text DEFAULT NULL, numbering text DEFAULT 'per_customer',
    grace_period_days integer DEFAULT 0, net_payment_term_days integer DEFAULT 0,
    address jsonb DEFAULT '{}', tax_id text DEFAULT NULL
) RETURNS billing.billing_entities
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    created billing.billing_entities;
BEGIN
    PERFORM billing._check_label('numbering', numbering, enum_range(NULL::billing.invoice_numbering)::text[]);
    IF grace_period_days < 0 OR net_payment_term_days < 0 THEN
        PERFORM billing._invalid('grace_period_days and net_payment_term_days must not be negative',
            format('got %s and %s', grace_period_days, net_payment_term_days), 'use 0 or more days');
    END IF;
    INSERT INTO billing.billing_entities (code, name, default_currency, timezone, invoice_prefix, numbering,
                                          grace_period_days, net_payment_term_days, address, tax_id)
    VALUES (code, name, billing._check_currency(default_currency), billing._check_timezone(timezone),
            coalesce(invoice_prefix, upper(left(code, 8))), numbering::billing.invoice_numbering, grace_period_days, net_payment_term_days, address, tax_id)
    RETURNING * INTO created;
    RETURN created;
END $$;
CREATE OR REPLACE FUNCTION billing.create_billable_metric(
    code text, name text, aggregation text, field_name text DEFAULT NULL, recurring boolean DEFAULT false,
    rounding_function text DEFAULT NULL, rounding_precision integer DEFAULT NULL, filters jsonb DEFAULT '{}'
) RETURNS billing.billable_metrics
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    created billing.billable_metrics;
    bad_key text;
BEGIN
    PERFORM billing._check_label('aggregation', aggregation, enum_range(NULL::billing.aggregation)::text[]);
    IF aggregation <> 'count' AND field_name IS NULL THEN
        PERFORM billing._invalid(format('aggregation %s needs a field_name', aggregation), 'field_name is null',
            'name the event property that carries the value');
    END IF;
    IF recurring AND aggregation NOT IN ('sum', 'unique_count', 'weighted_sum') THEN
        PERFORM billing._invalid(format('aggregation %s cannot be recurring', aggregation), 'recurring is true',
            'only sum, unique_count and weighted_sum metrics carry over periods');
    END IF;
    IF rounding_function IS NOT NULL THEN
        PERFORM billing._check_label('rounding_function', rounding_function, enum_range(NULL::billing.rounding_function)::text[]);
    END IF;
    -- rounding_precision without rounding_function is Lago's spelling of "no rounding": it is
    -- stored as given and ignored by usage (billing._round_units rounds only with a function).
    IF jsonb_typeof(filters) <> 'object' THEN
        PERFORM billing._invalid('filters must be a JSON object of key → allowed values', format('got %s', filters),
            'write filters like {"region": ["us", "eu"]}');
    END IF;
    SELECT key INTO bad_key FROM jsonb_each(filters)
    WHERE jsonb_typeof(value) <> 'array' OR jsonb_array_length(value) = 0
       OR EXISTS (SELECT 1 FROM jsonb_array_elements(value) v WHERE jsonb_typeof(v) <> 'string')
    LIMIT 1;
    IF bad_key IS NOT NULL THEN
        PERFORM billing._invalid(format('filters.%s must be a non-empty array of strings', bad_key),
            format('got %s', filters -> bad_key), 'write filters like {"region": ["us", "eu"]}');
    END IF;
    INSERT INTO billing.billable_metrics (code, name, aggregation, field_name, recurring, rounding_function, rounding_precision, filters)
    VALUES (code, name, aggregation::billing.aggregation, field_name, recurring, rounding_function::billing.rounding_function,
            rounding_precision, filters)
    RETURNING * INTO created;
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
        INSERT INTO billing.charges (plan_version_id, billable_metric_id, price, pay_in_advance, prorated, invoiceable,
                                     min_amount, pricing_group_keys, position)
        VALUES (created.id, metric.id,
                billing.price(jsonb_build_object('charge_model', charge -> 'charge_model', 'properties', coalesce(charge -> 'properties', '{}')))::jsonb,
                coalesce((charge ->> 'pay_in_advance')::boolean, false), coalesce((charge ->> 'prorated')::boolean, false),
                coalesce((charge ->> 'invoiceable')::boolean, true), (charge ->> 'min_amount')::numeric,
                coalesce(ARRAY(SELECT jsonb_array_elements_text(charge -> 'pricing_group_keys')), '{}'), charge_index)
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
    version_id bigint;
    version_number integer;
    plan_currency text;
    created billing.subscriptions;
BEGIN
    PERFORM billing._check_label('billing_time', billing_time, enum_range(NULL::billing.billing_time)::text[]);
    SELECT c.id, c.currency INTO customer_id, customer_currency FROM billing.customers c WHERE c.external_id = create_subscription.customer;
    IF NOT FOUND THEN
        PERFORM billing._unknown('customer', customer, 'create it with billing.create_customer');
    END IF;
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
    RETURN created;
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
        RETURN QUERY
        WITH per_dims AS (
            SELECT u.dims, u.units, u.events_count, billing._charge_filter(ch.id, u.dims) AS filter_id,
                   billing._group_key(ch.pricing_group_keys, u.dims) AS grouped_by
            FROM billing._metric_units(sub.id, metric, window_from, window_to, cust.timezone) u
            WHERE NOT ch.prorated
            UNION ALL
            SELECT u.dims, u.day_units, u.events_count, billing._charge_filter(ch.id, u.dims),
                   billing._group_key(ch.pricing_group_keys, u.dims)
            FROM billing._metric_day_units(sub.id, metric, window_from, window_to, cust.timezone) u
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
            SELECT billing._charge_filter(ch.id, v.dims) AS filter_id, billing._group_key(ch.pricing_group_keys, v.dims) AS grouped_by,
                   array_agg(x ORDER BY v.ord, x.ord) AS event_values
            FROM (SELECT ev.*, row_number() OVER () AS ord
                  FROM billing._metric_event_values(sub.id, metric.id, CASE WHEN metric.recurring THEN '-infinity' ELSE window_from END,
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
CREATE OR REPLACE FUNCTION billing.current_usage(external_subscription_id text)
RETURNS SETOF billing.usage_line
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    sub billing.subscriptions;
    cust billing.customers;
    starts timestamptz;
    ends timestamptz;
    bounds record;
BEGIN
    sub := billing._subscription(external_subscription_id);
    SELECT * INTO cust FROM billing.customers c WHERE c.id = sub.customer_id;
    starts := coalesce(sub.started_at, sub.subscription_at);
    ends := coalesce(sub.terminated_at, 'infinity');
    SELECT * INTO bounds FROM billing.period_bounds(
        (SELECT v.interval::text FROM billing.plan_versions v WHERE v.id = sub.plan_version_id), sub.billing_time::text,
        (starts AT TIME ZONE cust.timezone)::date, least(now(), ends), cust.timezone) pb;
    RETURN QUERY SELECT * FROM billing._usage(sub, cust, greatest(bounds.from_datetime, starts), least(bounds.to_datetime, ends));
END $$;
COMMENT ON TYPE billing.price IS
  'A validated price {"charge_model": ..., "properties": {...}} in Lago''s spelling: standard, graduated, volume, package, percentage, graduated_percentage or dynamic; the argument type of the pricing functions. Text output is canonical JSON; pg_billing''s tables store that JSON as jsonb, never this type.';
COMMENT ON TYPE billing.invoice_numbering IS 'How a billing entity numbers invoices: per_customer or per_entity.';
COMMENT ON TYPE billing.aggregation IS 'How a billable metric aggregates event values: count, sum, max, unique_count, latest or weighted_sum.';
COMMENT ON TYPE billing.rounding_function IS 'How a billable metric rounds its aggregated units before pricing: round, ceil or floor.';
COMMENT ON TYPE billing.billing_interval IS 'The length of a plan''s billing period: weekly, monthly, quarterly, semiannual or yearly.';
COMMENT ON TYPE billing.billing_time IS 'Where a subscription''s periods start: calendar (the first day of each period) or anniversary (the subscription''s start day).';
COMMENT ON TYPE billing.subscription_status IS 'A subscription''s state: pending (starts later), active or terminated.';
COMMENT ON COLUMN billing.charges.price IS 'The charge''s price as canonical JSON (what billing.price prints): {"charge_model": ..., "properties": {...}}, checked valid and canonical on every write.';
COMMENT ON COLUMN billing.charge_filters.price IS 'The filter''s price as canonical JSON, with the charge''s model and the filter''s properties, checked like billing.charges.price.';
