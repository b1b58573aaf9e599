-- The catalog usage is measured against: billing entities, customers, billable metrics,
-- versioned plans with their charges, and subscriptions. Rows are created through the
-- functions below, which validate input and raise specific SQLSTATEs.

-- The words a column may hold, each in one home: the tables store them, and the functions
-- that take them as text check them against the type's labels (billing._check_label).
CREATE TYPE billing.invoice_numbering AS ENUM ('per_customer', 'per_entity');
CREATE TYPE billing.aggregation AS ENUM ('count', 'sum', 'max', 'unique_count', 'latest', 'weighted_sum');
CREATE TYPE billing.rounding_function AS ENUM ('round', 'ceil', 'floor');
CREATE TYPE billing.billing_interval AS ENUM ('weekly', 'monthly', 'quarterly', 'semiannual', 'yearly');
CREATE TYPE billing.billing_time AS ENUM ('calendar', 'anniversary');
CREATE TYPE billing.subscription_status AS ENUM ('pending', 'active', 'terminated');

CREATE TABLE billing.billing_entities (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code text NOT NULL UNIQUE,
    name text NOT NULL,
    address jsonb NOT NULL DEFAULT '{}',
    tax_id text,
    default_currency text NOT NULL DEFAULT 'USD',
    timezone text NOT NULL DEFAULT 'UTC',
    invoice_prefix text NOT NULL,
    numbering billing.invoice_numbering NOT NULL DEFAULT 'per_customer',
    grace_period_days integer NOT NULL DEFAULT 0 CHECK (grace_period_days >= 0),
    net_payment_term_days integer NOT NULL DEFAULT 0 CHECK (net_payment_term_days >= 0),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Per-customer data (customers, subscriptions, events, rollups) carries the customer's id
-- in every primary and unique key, so that billing.distribute() can spread it over a Citus
-- cluster by customer; external ids stay unique across all customers through the two
-- directories below, which are small and replicated to every node there.
CREATE TABLE billing.customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    external_id text NOT NULL,
    name text,
    email text,
    address jsonb NOT NULL DEFAULT '{}',
    tax_id text,
    currency text NOT NULL,
    timezone text NOT NULL,
    billing_entity_id bigint NOT NULL REFERENCES billing.billing_entities,
    metadata jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE billing.billable_metrics (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code text NOT NULL UNIQUE,
    name text NOT NULL,
    aggregation billing.aggregation NOT NULL,
    field_name text,
    recurring boolean NOT NULL DEFAULT false,
    rounding_function billing.rounding_function,
    rounding_precision integer,
    filters jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (aggregation = 'count' OR field_name IS NOT NULL),
    CHECK (NOT recurring OR aggregation IN ('sum', 'unique_count', 'weighted_sum'))
);

CREATE TABLE billing.plans (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code text NOT NULL UNIQUE,
    name text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- A plan's terms. A change creates a new version; subscriptions keep the version they
-- were billed on, so invoiced history is never rewritten.
CREATE TABLE billing.plan_versions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plan_id bigint NOT NULL REFERENCES billing.plans,
    version integer NOT NULL,
    interval billing.billing_interval NOT NULL,
    amount numeric NOT NULL DEFAULT 0 CHECK (amount >= 0),
    currency text NOT NULL,
    pay_in_advance boolean NOT NULL DEFAULT false,
    trial_days integer NOT NULL DEFAULT 0 CHECK (trial_days >= 0),
    minimum_commitment numeric CHECK (minimum_commitment >= 0),
    usage_thresholds jsonb NOT NULL DEFAULT '[]',
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (plan_id, version)
);

CREATE TABLE billing.charges (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plan_version_id bigint NOT NULL REFERENCES billing.plan_versions,
    billable_metric_id bigint NOT NULL REFERENCES billing.billable_metrics,
    -- The price as its canonical JSON (billing.price's output): plain data any client
    -- reads, checked valid and canonical on every write.
    price jsonb NOT NULL CHECK (billing.price(price)::jsonb = price),
    pay_in_advance boolean NOT NULL DEFAULT false,
    prorated boolean NOT NULL DEFAULT false,
    invoiceable boolean NOT NULL DEFAULT true,
    min_amount numeric CHECK (min_amount >= 0),
    pricing_group_keys text[] NOT NULL DEFAULT '{}',
    position integer NOT NULL
);
CREATE INDEX ON billing.charges (plan_version_id);

-- A charge's filter: events whose properties match `values` (key → allowed values) are
-- priced with the filter's own price.
CREATE TABLE billing.charge_filters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    charge_id bigint NOT NULL REFERENCES billing.charges,
    "values" jsonb NOT NULL,
    price jsonb NOT NULL CHECK (billing.price(price)::jsonb = price),
    invoice_display_name text
);
CREATE INDEX ON billing.charge_filters (charge_id);

CREATE TABLE billing.subscriptions (
    id bigint GENERATED ALWAYS AS IDENTITY,
    external_id text NOT NULL,
    customer_id bigint NOT NULL REFERENCES billing.customers,
    plan_version_id bigint NOT NULL REFERENCES billing.plan_versions,
    status billing.subscription_status NOT NULL,
    billing_time billing.billing_time NOT NULL DEFAULT 'calendar',
    subscription_at timestamptz NOT NULL,
    started_at timestamptz,
    terminated_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (terminated_at IS NULL OR terminated_at >= subscription_at),
    PRIMARY KEY (customer_id, id),
    UNIQUE (customer_id, external_id)
);

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
    -- Every plan version the subscription is billed on (past, current and pending, after
    -- plan changes): ingestion keeps the event properties that any of them splits usage by.
    plan_version_ids bigint[] NOT NULL,
    -- Whether ingestion prices the subscription's events as it stores them, for its spend
    -- control: its customer burns a wallet down in real time, or its cap is enforced at
    -- ingestion (billing._realtime; the wallet functions keep it in step).
    realtime boolean NOT NULL DEFAULT false,
    UNIQUE (customer_id, subscription_id)
);

INSERT INTO billing.billing_entities (code, name, invoice_prefix) VALUES ('default', 'Default billing entity', 'INV');

-- Raises an error with pg_billing's shape from PL/pgSQL (lowercase message, DETAIL with the
-- offending value, HINT with the fix), as the Rust side raises its own.
CREATE FUNCTION billing._raise(sqlstate text, message text, detail text, hint text) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
BEGIN
    RAISE EXCEPTION USING ERRCODE = sqlstate, MESSAGE = message, DETAIL = detail, HINT = hint;
END $$;

CREATE FUNCTION billing._invalid(message text, detail text, hint text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM billing._raise('22023', message, detail, hint);
END $$;

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

CREATE FUNCTION billing._check_timezone(tz text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
BEGIN
    PERFORM now() AT TIME ZONE tz;
    RETURN tz;
EXCEPTION WHEN invalid_parameter_value THEN
    PERFORM billing._invalid(format('unknown time zone "%s"', tz), format('got %s', tz),
                             'use an IANA time zone name such as UTC or Europe/Paris');
END $$;

CREATE FUNCTION billing._check_currency(currency text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT currency WHERE billing.currency_minor_units(currency) IS NOT NULL $$;

CREATE FUNCTION billing._unknown(kind text, key text, hint text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM billing._raise('23503', format('unknown %s "%s"', kind, key),
                           format('no %s has the code or external id %s', kind, key), hint);
END $$;

CREATE FUNCTION billing.create_billing_entity(
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

CREATE FUNCTION billing.create_customer(
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

CREATE FUNCTION billing.create_billable_metric(
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

-- Lago's rule for prorated charges: the metric is recurring (sum or unique_count; a
-- weighted_sum already weighs usage by time), and the model is standard, graduated or volume
-- when paid in arrears, standard when paid in advance. Anything else raises 22023, so that
-- "prorated": true is never accepted and then ignored. (A missing model is left to the
-- price's own validation.)
CREATE FUNCTION billing._check_prorated(charge_index integer, metric billing.billable_metrics, model text, pay_in_advance boolean)
RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
#variable_conflict use_variable
BEGIN
    IF NOT metric.recurring THEN
        PERFORM billing._invalid(format('charges[%s] cannot be prorated: metric "%s" is not recurring', charge_index, metric.code),
            format('got "prorated": true for the %s metric "%s", which resets every period', metric.aggregation, metric.code),
            'remove "prorated", or charge a recurring sum or unique_count metric');
    ELSIF metric.aggregation = 'weighted_sum' THEN
        PERFORM billing._invalid(format('charges[%s] cannot be prorated: metric "%s" is a weighted_sum', charge_index, metric.code),
            format('got "prorated": true for the weighted_sum metric "%s"', metric.code),
            'remove "prorated": a weighted_sum already weighs usage by the time it lasted');
    ELSIF pay_in_advance AND model <> 'standard' THEN
        PERFORM billing._invalid(format('charges[%s] cannot be prorated with charge_model %s paid in advance', charge_index, model),
            format('got "prorated": true, "pay_in_advance": true and charge_model %s', model),
            'a prorated charge paid in advance uses the standard model; remove "prorated" or use standard');
    ELSIF model NOT IN ('standard', 'graduated', 'volume') THEN
        PERFORM billing._invalid(format('charges[%s] cannot be prorated with charge_model %s', charge_index, model),
            format('got "prorated": true and charge_model %s', model),
            'prorated charges use the standard, graduated or volume model; remove "prorated" or change the model');
    END IF;
END $$;

-- Creates the plan on first use and a new version on every later call.
CREATE FUNCTION billing.create_plan(
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
        IF coalesce((charge ->> 'pay_in_advance')::boolean, false) THEN
            PERFORM billing._check_pay_in_advance(charge_index, metric, charge ->> 'charge_model');
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
    -- Lago's plan JSON carries its usage thresholds: they become the version's.
    IF jsonb_typeof(usage_thresholds) = 'array' AND jsonb_array_length(usage_thresholds) > 0 THEN
        PERFORM billing.set_usage_thresholds(code, usage_thresholds);
    END IF;
    RETURN created;
END $$;

CREATE FUNCTION billing.create_subscription(
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
    realtime boolean;
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
    realtime := billing._realtime(created.customer_id, created.id);
    INSERT INTO billing.subscription_directory (external_id, customer_id, subscription_id, plan_version_id, timezone, active_from,
                                                plan_version_ids, realtime)
    VALUES (created.external_id, created.customer_id, created.id, created.plan_version_id, customer_timezone,
            coalesce(created.started_at, created.subscription_at), ARRAY[created.plan_version_id], realtime);
    RETURN created;
END $$;

CREATE FUNCTION billing.terminate_subscription(external_id text, terminated_at timestamptz DEFAULT now())
RETURNS billing.subscriptions
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    entry billing.subscription_directory;
    subscription billing.subscriptions;
    in_force bigint;
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
    IF EXISTS (SELECT 1 FROM billing.plan_changes pc WHERE pc.customer_id = entry.customer_id AND pc.subscription_id = entry.subscription_id
               AND pc.effective_at >= terminated_at AND pc.effective_at <= now()) THEN
        PERFORM billing._raise('55000', format('subscription "%s" changed plan at or after %s', external_id, terminated_at),
            'a plan change that has taken effect is billed on its plan', 'terminate after the last plan change that took effect');
    END IF;
    -- Pending plan changes from the termination on never take effect; the plan in force then stays.
    in_force := CASE WHEN terminated_at <= now() THEN ((billing._in_force(subscription, terminated_at)).billed).plan_version_id
                     ELSE subscription.plan_version_id END;
    DELETE FROM billing.plan_changes pc
    WHERE pc.customer_id = entry.customer_id AND pc.subscription_id = entry.subscription_id AND pc.effective_at >= terminated_at;
    UPDATE billing.subscriptions s SET status = 'terminated', terminated_at = terminate_subscription.terminated_at,
        started_at = coalesce(s.started_at, s.subscription_at),
        plan_version_id = in_force
    WHERE s.customer_id = entry.customer_id AND s.id = entry.subscription_id RETURNING * INTO subscription;
    UPDATE billing.subscription_directory d SET active_until = subscription.terminated_at, plan_version_id = subscription.plan_version_id
    WHERE d.external_id = entry.external_id;
    PERFORM billing._note_plan_versions(subscription);
    -- A termination that has happened is billed at once: the final invoice.
    IF subscription.terminated_at <= now() THEN
        PERFORM billing._bill_subscription(subscription.customer_id, subscription.id, now());
    END IF;
    RETURN subscription;
END $$;

-- pg_dump keeps every billing row (the default entity is recreated by CREATE EXTENSION).
SELECT pg_catalog.pg_extension_config_dump('billing.billing_entities', 'WHERE code <> ''default''');
SELECT pg_catalog.pg_extension_config_dump('billing.billing_entities_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.customers', '');
SELECT pg_catalog.pg_extension_config_dump('billing.customers_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.billable_metrics', '');
SELECT pg_catalog.pg_extension_config_dump('billing.billable_metrics_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.plans', '');
SELECT pg_catalog.pg_extension_config_dump('billing.plans_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.plan_versions', '');
SELECT pg_catalog.pg_extension_config_dump('billing.plan_versions_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.charges', '');
SELECT pg_catalog.pg_extension_config_dump('billing.charges_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.charge_filters', '');
SELECT pg_catalog.pg_extension_config_dump('billing.charge_filters_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.subscriptions', '');
SELECT pg_catalog.pg_extension_config_dump('billing.subscriptions_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.customer_directory', '');
SELECT pg_catalog.pg_extension_config_dump('billing.subscription_directory', '');

REVOKE ALL ON FUNCTION billing._raise(text, text, text, text), billing._invalid(text, text, text), billing._check_label(text, text, text[]),
    billing._check_timezone(text), billing._check_currency(text),
    billing._unknown(text, text, text), billing._check_prorated(integer, billing.billable_metrics, text, boolean) FROM PUBLIC;

-- Pending subscriptions whose start has come become active, and plan changes whose instant
-- has come take effect (the billing cycle calls this; pg_cron can too). Ingestion already
-- accepts their events from subscription_at on; billing already bills each plan for its time.
-- (PL/pgSQL: Citus plans no SQL-language function that reads a distributed table with
-- parameters.)
CREATE FUNCTION billing.activate_subscriptions(as_of timestamptz DEFAULT now()) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    activated integer;
BEGIN
    UPDATE billing.subscriptions s SET status = 'active', started_at = s.subscription_at
    WHERE s.status = 'pending' AND s.subscription_at <= as_of;
    GET DIAGNOSTICS activated = ROW_COUNT;
    PERFORM billing._apply_plan_changes(as_of);
    RETURN activated;
END $$;
