-- pg_billing 0.3.0 -> 0.4.0 (in development): ALTER EXTENSION pg_billing UPDATE.
-- Every schema change of 0.4.0 lands here, so that an updated database has exactly a fresh
-- install's schema (test tier 9).

-- Taxes (sql/taxes.sql).
-- Taxes: a catalog of rates, attached to billing entities (their defaults), customers,
-- plans and charges. An invoice's fees are taxed when its totals are computed (creation,
-- refresh, finalization), each fee by the taxes of its charge, else of the subscription's
-- plan, else of the customer, else of the billing entity; the rate is copied onto the fee's
-- tax rows then, so a later rate change reaches drafts refreshed after it and never a
-- finalized invoice.
CREATE TABLE billing.taxes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code text NOT NULL UNIQUE CHECK (code <> ''),
    name text NOT NULL,
    -- In percent: 20 is 20%.
    rate numeric NOT NULL CHECK (rate >= 0 AND rate <= 100),
    description text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE billing.billing_entity_taxes (
    billing_entity_id bigint NOT NULL REFERENCES billing.billing_entities,
    tax_id bigint NOT NULL REFERENCES billing.taxes,
    PRIMARY KEY (billing_entity_id, tax_id)
);

CREATE TABLE billing.plan_taxes (
    plan_id bigint NOT NULL REFERENCES billing.plans,
    tax_id bigint NOT NULL REFERENCES billing.taxes,
    PRIMARY KEY (plan_id, tax_id)
);

CREATE TABLE billing.charge_taxes (
    charge_id bigint NOT NULL REFERENCES billing.charges,
    tax_id bigint NOT NULL REFERENCES billing.taxes,
    PRIMARY KEY (charge_id, tax_id)
);

CREATE TABLE billing.customer_taxes (
    customer_id bigint NOT NULL REFERENCES billing.customers,
    tax_id bigint NOT NULL REFERENCES billing.taxes,
    PRIMARY KEY (customer_id, tax_id)
);

-- Each tax on each invoiced fee, with the tax's code, name and rate as they were when the
-- invoice's totals were computed. base_amount is the rounded fee (less its coupon share);
-- precise_amount = base_amount × rate / 100, exact (computed as × 0.01, which never rounds):
-- the invoice rounds each tax's sum once.
CREATE TABLE billing.fee_taxes (
    customer_id bigint NOT NULL,
    invoice_id bigint NOT NULL,
    fee_id bigint NOT NULL,
    tax_id bigint NOT NULL REFERENCES billing.taxes,
    tax_code text NOT NULL,
    tax_name text NOT NULL,
    tax_rate numeric NOT NULL,
    base_amount numeric NOT NULL,
    precise_amount numeric NOT NULL,
    PRIMARY KEY (customer_id, fee_id, tax_id),
    FOREIGN KEY (customer_id, fee_id) REFERENCES billing.fees (customer_id, id) ON DELETE CASCADE
);
CREATE INDEX fee_taxes_by_invoice ON billing.fee_taxes (customer_id, invoice_id);

-- The taxes of a finalized or voided invoice are as immutable as its fees.
CREATE TRIGGER fee_taxes_immutable BEFORE UPDATE OR DELETE ON billing.fee_taxes
FOR EACH ROW EXECUTE FUNCTION billing._fee_immutable();

-- The tax with this code, or 23503.
CREATE FUNCTION billing._tax(code text) RETURNS billing.taxes
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    found_tax billing.taxes;
BEGIN
    SELECT * INTO found_tax FROM billing.taxes t WHERE t.code = code;
    IF NOT FOUND THEN
        PERFORM billing._unknown('tax', code, 'create it with billing.create_tax');
    END IF;
    RETURN found_tax;
END $$;

CREATE FUNCTION billing._check_tax_rate(rate numeric) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE AS $$
#variable_conflict use_variable
BEGIN
    IF rate IS NULL OR rate < 0 OR rate > 100 OR rate = 'NaN' THEN
        PERFORM billing._invalid('a tax rate is a percentage from 0 to 100', format('got %s', rate),
            'give the rate in percent: 20 for 20%');
    END IF;
    RETURN rate;
END $$;

CREATE FUNCTION billing.create_tax(code text, name text, rate numeric, description text DEFAULT NULL)
RETURNS billing.taxes
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    created billing.taxes;
BEGIN
    IF coalesce(btrim(code), '') = '' OR coalesce(btrim(name), '') = '' THEN
        PERFORM billing._invalid('a tax needs a code and a name', format('got code "%s" and name "%s"', code, name),
            'billing.create_tax(''vat_fr'', ''TVA'', 20)');
    END IF;
    INSERT INTO billing.taxes (code, name, rate, description)
    VALUES (code, name, billing._check_tax_rate(rate), description)
    RETURNING * INTO created;
    RETURN created;
END $$;

-- Changes a tax; what is not given stays. Invoices whose totals are computed afterwards
-- (new ones, and drafts on refresh or finalization) use the new rate.
CREATE FUNCTION billing.update_tax(code text, rate numeric DEFAULT NULL, name text DEFAULT NULL, description text DEFAULT NULL)
RETURNS billing.taxes
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    updated billing.taxes;
BEGIN
    PERFORM billing._tax(code);
    UPDATE billing.taxes t
    SET rate = CASE WHEN rate IS NULL THEN t.rate ELSE billing._check_tax_rate(rate) END,
        name = coalesce(name, t.name), description = coalesce(description, t.description), updated_at = now()
    WHERE t.code = code
    RETURNING * INTO updated;
    RETURN updated;
END $$;

-- Sets the taxes of a billing entity (by code; its customers' defaults), a customer (by
-- external id), a plan (by code), a charge (by id) or an add-on (by code), replacing those
-- it had; an empty array removes them. Returns the codes now set, in order.
CREATE FUNCTION billing.set_taxes(applies_to text, target text, tax_codes text[])
RETURNS text[]
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    tax_ids bigint[];
    target_id bigint;
BEGIN
    PERFORM billing._check_label('tax target', applies_to, ARRAY['billing_entity', 'customer', 'plan', 'charge', 'add_on']);
    IF tax_codes IS NULL THEN
        PERFORM billing._invalid('tax_codes must not be null', 'got NULL', 'give ''{}'' to remove every tax');
    END IF;
    SELECT coalesce(array_agg((billing._tax(c)).id ORDER BY c), '{}') INTO tax_ids
    FROM (SELECT DISTINCT unnest(tax_codes) AS c) codes;
    -- The target's row is locked: two calls for one target take turns, the second replacing
    -- what the first set.
    CASE applies_to
    WHEN 'billing_entity' THEN
        SELECT e.id INTO target_id FROM billing.billing_entities e WHERE e.code = target FOR UPDATE;
    WHEN 'customer' THEN
        SELECT d.customer_id INTO target_id FROM billing.customer_directory d WHERE d.external_id = target;
        PERFORM 1 FROM billing.customers c WHERE c.id = target_id FOR UPDATE;
    WHEN 'plan' THEN
        SELECT p.id INTO target_id FROM billing.plans p WHERE p.code = target FOR UPDATE;
    WHEN 'add_on' THEN
        SELECT a.id INTO target_id FROM billing.add_ons a WHERE a.code = target FOR UPDATE;
    ELSE
        SELECT c.id INTO target_id FROM billing.charges c WHERE c.id::text = target FOR UPDATE;
    END CASE;
    IF target_id IS NULL THEN
        PERFORM billing._unknown(replace(replace(applies_to, 'add_on', 'add-on'), '_', ' '), target,
            'a billing entity, plan or add-on by its code, a customer by its external id, a charge by its id');
    END IF;
    CASE applies_to
    WHEN 'billing_entity' THEN
        DELETE FROM billing.billing_entity_taxes x WHERE x.billing_entity_id = target_id;
        INSERT INTO billing.billing_entity_taxes (billing_entity_id, tax_id) SELECT target_id, unnest(tax_ids);
    WHEN 'customer' THEN
        DELETE FROM billing.customer_taxes x WHERE x.customer_id = target_id;
        INSERT INTO billing.customer_taxes (customer_id, tax_id) SELECT target_id, unnest(tax_ids);
    WHEN 'plan' THEN
        DELETE FROM billing.plan_taxes x WHERE x.plan_id = target_id;
        INSERT INTO billing.plan_taxes (plan_id, tax_id) SELECT target_id, unnest(tax_ids);
    WHEN 'add_on' THEN
        DELETE FROM billing.add_on_taxes x WHERE x.add_on_id = target_id;
        INSERT INTO billing.add_on_taxes (add_on_id, tax_id) SELECT target_id, unnest(tax_ids);
    ELSE
        DELETE FROM billing.charge_taxes x WHERE x.charge_id = target_id;
        INSERT INTO billing.charge_taxes (charge_id, tax_id) SELECT target_id, unnest(tax_ids);
    END CASE;
    RETURN (SELECT coalesce(array_agg(t.code ORDER BY t.code), '{}') FROM billing.taxes t WHERE t.id = ANY (tax_ids));
END $$;

-- Taxes a draft's invoiced fees anew and returns the invoice's tax total: each tax's exact
-- sum over its fees, rounded once to the currency, added up. A fee with taxes of its own (a
-- one-off item's) takes those; a fee whose charge has taxes, the charge's; every other fee
-- the first of the plan's, the customer's and the billing entity's that are set.
CREATE FUNCTION billing._tax_fees(customer_id bigint, invoice_id bigint) RETURNS numeric
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    inv billing.invoices;
    plan_id bigint;
    default_taxes bigint[];
    -- Which taxes each fee gets, as pairs (charge id, tax id): a charge's own taxes, and
    -- under charge id 0 the defaults of every other fee. Read once, so that one statement
    -- taxes every fee from the same attachments, whatever changes meanwhile.
    map_charge bigint[];
    map_tax bigint[];
BEGIN
    -- Without any tax there is nothing to do (nor any fee tax to remove: they reference a tax).
    IF NOT EXISTS (SELECT 1 FROM billing.taxes) THEN
        RETURN 0;
    END IF;
    SELECT * INTO inv FROM billing.invoices i WHERE i.customer_id = customer_id AND i.id = invoice_id;
    DELETE FROM billing.fee_taxes ft WHERE ft.customer_id = customer_id AND ft.invoice_id = invoice_id;
    SELECT v.plan_id INTO plan_id FROM billing.subscriptions s JOIN billing.plan_versions v ON v.id = s.plan_version_id
    WHERE s.customer_id = customer_id AND s.id = inv.subscription_id;
    SELECT array_agg(x.tax_id) INTO default_taxes FROM billing.plan_taxes x WHERE x.plan_id = plan_id;
    IF default_taxes IS NULL THEN
        SELECT array_agg(x.tax_id) INTO default_taxes FROM billing.customer_taxes x WHERE x.customer_id = customer_id;
    END IF;
    IF default_taxes IS NULL THEN
        SELECT array_agg(x.tax_id) INTO default_taxes FROM billing.billing_entity_taxes x WHERE x.billing_entity_id = inv.billing_entity_id;
    END IF;
    SELECT array_agg(ct.charge_id ORDER BY ct.charge_id, ct.tax_id), array_agg(ct.tax_id ORDER BY ct.charge_id, ct.tax_id)
    INTO map_charge, map_tax FROM billing.charge_taxes ct;
    map_charge := coalesce(map_charge, '{}') || array_fill(0::bigint, ARRAY[coalesce(cardinality(default_taxes), 0)]);
    map_tax := coalesce(map_tax, '{}') || coalesce(default_taxes, '{}');
    -- Fees that name taxes of their own: one-off items, fixed charges of a taxed add-on.
    IF cardinality(map_tax) > 0
       OR EXISTS (SELECT 1 FROM billing.fees fe WHERE fe.customer_id = customer_id AND fe.invoice_id = invoice_id AND fe.tax_ids IS NOT NULL) THEN
        INSERT INTO billing.fee_taxes (customer_id, invoice_id, fee_id, tax_id, tax_code, tax_name, tax_rate, base_amount, precise_amount)
        SELECT fe.customer_id, fe.invoice_id, fe.id, t.id, t.code, t.name, t.rate, fe.amount - fe.progressive_credit_amount - fe.precise_coupons_amount,
               trim_scale((fe.amount - fe.progressive_credit_amount - fe.precise_coupons_amount) * t.rate * 0.01)
        FROM billing.fees fe
        CROSS JOIN LATERAL (
            SELECT unnest(fe.tax_ids) AS tax_id
            UNION ALL
            SELECT a.tax_id FROM unnest(map_charge, map_tax) AS a(charge_id, tax_id)
            WHERE fe.tax_ids IS NULL AND a.charge_id = CASE WHEN fe.charge_id = ANY (map_charge) THEN fe.charge_id ELSE 0 END
        ) applicable
        JOIN billing.taxes t ON t.id = applicable.tax_id
        WHERE fe.customer_id = customer_id AND fe.invoice_id = invoice_id AND fe.invoiceable;
    END IF;
    RETURN billing._invoice_taxes_amount(customer_id, invoice_id, inv.currency);
END $$;

-- An invoice's tax total from its fees' taxes: each tax's exact sum rounded once, added up.
CREATE FUNCTION billing._invoice_taxes_amount(customer_id bigint, invoice_id bigint, currency text) RETURNS numeric
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    total numeric;
BEGIN
    SELECT coalesce(sum(billing.round_money(per_tax.amount, currency)), 0) INTO total
    FROM (SELECT sum(ft.precise_amount) AS amount FROM billing.fee_taxes ft
          WHERE ft.customer_id = customer_id AND ft.invoice_id = invoice_id GROUP BY ft.tax_id) per_tax;
    RETURN total;
END $$;

REVOKE ALL ON FUNCTION billing._tax(text), billing._check_tax_rate(numeric),
    billing._tax_fees(bigint, bigint), billing._invoice_taxes_amount(bigint, bigint, text) FROM PUBLIC;

-- pg_dump keeps the rows (the tables belong to the extension).
SELECT pg_catalog.pg_extension_config_dump('billing.taxes', '');
SELECT pg_catalog.pg_extension_config_dump('billing.taxes_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.billing_entity_taxes', '');
SELECT pg_catalog.pg_extension_config_dump('billing.plan_taxes', '');
SELECT pg_catalog.pg_extension_config_dump('billing.charge_taxes', '');
SELECT pg_catalog.pg_extension_config_dump('billing.customer_taxes', '');
SELECT pg_catalog.pg_extension_config_dump('billing.fee_taxes', '');

-- Lookups of a customer by external id and of a plan's current version.
-- The customer with this external id, or 23503.
CREATE FUNCTION billing._customer(external_id text) RETURNS billing.customers
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    found_customer billing.customers;
BEGIN
    SELECT c.* INTO found_customer FROM billing.customer_directory d JOIN billing.customers c ON c.id = d.customer_id
    WHERE d.external_id = external_id;
    IF NOT FOUND THEN
        PERFORM billing._unknown('customer', external_id, 'create it with billing.create_customer');
    END IF;
    RETURN found_customer;
END $$;
-- The current (latest) version of the plan with this code, or 23503.
CREATE FUNCTION billing._plan_version(code text) RETURNS billing.plan_versions
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    version billing.plan_versions;
BEGIN
    SELECT v.* INTO version FROM billing.plans p JOIN billing.plan_versions v ON v.plan_id = p.id
    WHERE p.code = code ORDER BY v.version DESC LIMIT 1;
    IF NOT FOUND THEN
        PERFORM billing._unknown('plan', code, 'create it with billing.create_plan');
    END IF;
    RETURN version;
END $$;
REVOKE ALL ON FUNCTION billing._customer(text), billing._plan_version(text) FROM PUBLIC;

-- Usage can be read from the raw events alone (from_events), for billing.verify_invoice.
-- Units per dimension set of one metric in [from_ts, to_ts]. Day-aligned windows read
-- the day rollups; unique_count, weighted_sum and unaligned windows read raw events, and so
-- does every window with from_events (billing.verify_invoice checks the rollups that way).
CREATE FUNCTION billing._metric_units(
    customer_id bigint, subscription_id bigint, metric billing.billable_metrics, from_ts timestamptz, to_ts timestamptz, timezone text,
    from_events boolean DEFAULT false
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
    ELSIF NOT from_events AND (aligned OR (metric.recurring AND end_aligned)) THEN
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
-- Day-weighted units of a recurring metric for prorated charges, per dimension set: the
-- sum of value × the customer-local days it is active in [from_ts, to_ts], both ends
-- included. A value carried in from before the window counts for every day of it; an event
-- in it from its own day to the window's last day; a unique_count member from the day it was
-- added (or the window's first day) to the day it was removed (or the window's last day).
-- The caller divides by the days of the billing period (billing._prorate). from_events as
-- for billing._metric_units.
CREATE FUNCTION billing._metric_day_units(
    customer_id bigint, subscription_id bigint, metric billing.billable_metrics, from_ts timestamptz, to_ts timestamptz, timezone text,
    from_events boolean DEFAULT false
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
    ELSIF end_aligned AND NOT from_events THEN
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
-- Usage lines of a subscription (already looked up, with its customer) in a window; the
-- body of billing.usage and billing.current_usage. Its plans are cached as usual even in
-- the billing run, which plans every other statement anew (billing._attempt): the tables it
-- reads are not the ones a run grows, and planning its queries for each subscription cost
-- more than it saved (10,000 subscriptions billed in 34 s with, 30 s without).
-- from_events reads every metric from the raw events, never the rollups.
CREATE FUNCTION billing._usage(
    sub billing.subscriptions, cust billing.customers, window_from timestamptz, window_to timestamptz, from_events boolean DEFAULT false
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
            FROM billing._metric_units(sub.customer_id, sub.id, metric, window_from, window_to, cust.timezone, from_events) u
            CROSS JOIN LATERAL billing._group_of(ch.pricing_group_keys, u.dims) g
            WHERE NOT ch.prorated
            UNION ALL
            SELECT u.dims, u.day_units, u.events_count, CASE WHEN filtered THEN billing._charge_filter(ch.id, u.dims) END,
                   g.grouped_by
            FROM billing._metric_day_units(sub.customer_id, sub.id, metric, window_from, window_to, cust.timezone, from_events) u
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
REVOKE ALL ON FUNCTION billing._usage(billing.subscriptions, billing.customers, timestamptz, timestamptz, boolean),
    billing._metric_units(bigint, bigint, billing.billable_metrics, timestamptz, timestamptz, text, boolean),
    billing._metric_day_units(bigint, bigint, billing.billable_metrics, timestamptz, timestamptz, text, boolean) FROM PUBLIC;
-- Roles that could run the old forms (billing_admin, a reader granted EXECUTE ON ALL
-- FUNCTIONS, which billing.usage needs) may run the new ones.
DO $$
DECLARE
    grant_to record;
BEGIN
    FOR grant_to IN
        SELECT DISTINCT d.new_form, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(r.rolname) END AS role
        FROM (VALUES ('billing._usage(billing.subscriptions, billing.customers, timestamptz, timestamptz)',
                      'billing._usage(billing.subscriptions, billing.customers, timestamptz, timestamptz, boolean)'),
                     ('billing._metric_units(bigint, bigint, billing.billable_metrics, timestamptz, timestamptz, text)',
                      'billing._metric_units(bigint, bigint, billing.billable_metrics, timestamptz, timestamptz, text, boolean)'),
                     ('billing._metric_day_units(bigint, bigint, billing.billable_metrics, timestamptz, timestamptz, text)',
                      'billing._metric_day_units(bigint, bigint, billing.billable_metrics, timestamptz, timestamptz, text, boolean)')
             ) d(old_form, new_form)
        JOIN pg_catalog.pg_proc p ON p.oid = d.old_form::regprocedure
        CROSS JOIN LATERAL aclexplode(p.proacl) a
        LEFT JOIN pg_catalog.pg_roles r ON r.oid = a.grantee
        WHERE a.privilege_type = 'EXECUTE' AND a.grantee <> p.proowner
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', grant_to.new_form, grant_to.role);
    END LOOP;
END $$;
DROP FUNCTION billing._usage(billing.subscriptions, billing.customers, timestamptz, timestamptz);
DROP FUNCTION billing._metric_units(bigint, bigint, billing.billable_metrics, timestamptz, timestamptz, text);
DROP FUNCTION billing._metric_day_units(bigint, bigint, billing.billable_metrics, timestamptz, timestamptz, text);

-- Coupons (sql/coupons.sql); each fee's share of them.
ALTER TABLE billing.fees ADD COLUMN precise_coupons_amount numeric NOT NULL DEFAULT 0;

-- Coupons: discounts applied to a customer, taken off its invoices before tax when they are
-- finalized (a draft in its grace period shows none yet). A fixed coupon takes at most what
-- its fees leave, a percentage coupon round(base × rate); each is spread over the fees it
-- covers pro rata to what is left of them, with 5 decimals (billing.fees.precise_coupons_amount),
-- which the taxes then leave out. Metric-limited coupons go first, then plan-limited ones,
-- then the rest, each group in the order the coupons were applied.
CREATE TYPE billing.coupon_type AS ENUM ('fixed_amount', 'percentage');
CREATE TYPE billing.coupon_frequency AS ENUM ('once', 'recurring', 'forever');
CREATE TYPE billing.applied_coupon_status AS ENUM ('active', 'terminated');

CREATE TABLE billing.coupons (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code text NOT NULL UNIQUE CHECK (code <> ''),
    name text NOT NULL,
    coupon_type billing.coupon_type NOT NULL,
    -- fixed_amount: the amount in currency; percentage: the rate in percent.
    amount numeric CHECK (amount > 0),
    currency text,
    percentage_rate numeric CHECK (percentage_rate > 0 AND percentage_rate <= 100),
    frequency billing.coupon_frequency NOT NULL DEFAULT 'once',
    -- recurring: the number of invoices it applies to.
    frequency_duration integer CHECK (frequency_duration > 0),
    -- After it, the coupon can no longer be applied to a customer (applied ones carry on).
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((coupon_type = 'fixed_amount') = (amount IS NOT NULL AND currency IS NOT NULL AND percentage_rate IS NULL)),
    CHECK ((coupon_type = 'percentage') = (percentage_rate IS NOT NULL AND amount IS NULL)),
    CHECK ((frequency = 'recurring') = (frequency_duration IS NOT NULL))
);

-- A coupon limited to plans covers the invoices of subscriptions to them; limited to billable
-- metrics, the fees of charges on them.
CREATE TABLE billing.coupon_plans (
    coupon_id bigint NOT NULL REFERENCES billing.coupons,
    plan_id bigint NOT NULL REFERENCES billing.plans,
    PRIMARY KEY (coupon_id, plan_id)
);
CREATE TABLE billing.coupon_billable_metrics (
    coupon_id bigint NOT NULL REFERENCES billing.coupons,
    billable_metric_id bigint NOT NULL REFERENCES billing.billable_metrics,
    PRIMARY KEY (coupon_id, billable_metric_id)
);

-- A coupon applied to a customer, with what is left of it: the amount of a once-fixed
-- coupon, the invoices of a recurring one.
CREATE TABLE billing.applied_coupons (
    id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id bigint NOT NULL REFERENCES billing.customers,
    coupon_id bigint NOT NULL REFERENCES billing.coupons,
    status billing.applied_coupon_status NOT NULL DEFAULT 'active',
    amount numeric,
    amount_remaining numeric,
    percentage_rate numeric,
    frequency billing.coupon_frequency NOT NULL,
    frequency_duration_remaining integer,
    created_at timestamptz NOT NULL DEFAULT now(),
    terminated_at timestamptz,
    PRIMARY KEY (customer_id, id),
    CHECK (amount_remaining >= 0 AND frequency_duration_remaining >= 0)
);
-- One active application of a coupon per customer.
CREATE UNIQUE INDEX applied_coupons_active ON billing.applied_coupons (customer_id, coupon_id) WHERE status = 'active';

-- What each coupon took off each finalized invoice (rounded to the currency).
CREATE TABLE billing.invoice_coupons (
    customer_id bigint NOT NULL,
    invoice_id bigint NOT NULL,
    applied_coupon_id bigint NOT NULL,
    coupon_code text NOT NULL,
    coupon_name text NOT NULL,
    amount numeric NOT NULL,
    PRIMARY KEY (customer_id, invoice_id, applied_coupon_id),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES billing.invoices (customer_id, id),
    FOREIGN KEY (customer_id, applied_coupon_id) REFERENCES billing.applied_coupons (customer_id, id)
);

-- The coupon with this code, or 23503.
CREATE FUNCTION billing._coupon(code text) RETURNS billing.coupons
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    found_coupon billing.coupons;
BEGIN
    SELECT * INTO found_coupon FROM billing.coupons c WHERE c.code = code;
    IF NOT FOUND THEN
        PERFORM billing._unknown('coupon', code, 'create it with billing.create_coupon');
    END IF;
    RETURN found_coupon;
END $$;

CREATE FUNCTION billing.create_coupon(
    code text, name text, coupon_type text, amount numeric DEFAULT NULL, currency text DEFAULT NULL,
    percentage_rate numeric DEFAULT NULL, frequency text DEFAULT 'once', frequency_duration integer DEFAULT NULL,
    expires_at timestamptz DEFAULT NULL, plans text[] DEFAULT NULL, billable_metrics text[] DEFAULT NULL
) RETURNS billing.coupons
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    created billing.coupons;
    unknown text;
BEGIN
    PERFORM billing._check_label('coupon type', coupon_type, enum_range(NULL::billing.coupon_type)::text[]);
    PERFORM billing._check_label('coupon frequency', frequency, enum_range(NULL::billing.coupon_frequency)::text[]);
    IF coalesce(code, '') = '' OR name IS NULL THEN
        PERFORM billing._invalid('a coupon needs a code and a name', format('got code "%s" and name "%s"', code, name),
            'billing.create_coupon(''welcome'', ''Welcome offer'', ''percentage'', percentage_rate => 10)');
    END IF;
    IF coupon_type = 'fixed_amount' AND (amount IS NULL OR amount <= 0 OR currency IS NULL OR percentage_rate IS NOT NULL) THEN
        PERFORM billing._invalid('a fixed_amount coupon needs a positive amount and its currency, and no percentage_rate',
            format('got amount %s, currency %s, percentage_rate %s', amount, currency, percentage_rate),
            'billing.create_coupon(''ten-off'', ''10 off'', ''fixed_amount'', amount => 10, currency => ''EUR'')');
    END IF;
    IF coupon_type = 'percentage' AND (percentage_rate IS NULL OR percentage_rate <= 0 OR percentage_rate > 100 OR amount IS NOT NULL) THEN
        PERFORM billing._invalid('a percentage coupon needs a percentage_rate above 0 and at most 100, and no amount',
            format('got percentage_rate %s, amount %s', percentage_rate, amount),
            'billing.create_coupon(''welcome'', ''Welcome offer'', ''percentage'', percentage_rate => 10)');
    END IF;
    IF coupon_type = 'fixed_amount' AND amount <> billing.round_money(amount, billing._check_currency(currency)) THEN
        PERFORM billing._invalid(format('amount has more decimals than %s has', currency), format('got %s', amount),
            format('give the amount in %s with at most %s decimals', currency, billing.currency_minor_units(currency)));
    END IF;
    IF (frequency = 'recurring') <> (frequency_duration IS NOT NULL) OR frequency_duration <= 0 THEN
        PERFORM billing._invalid('frequency_duration is the number of invoices of a recurring coupon, and only of one',
            format('got frequency %s, frequency_duration %s', frequency, frequency_duration),
            'give frequency => ''recurring'' with frequency_duration => 3, or leave frequency_duration NULL');
    END IF;
    IF cardinality(plans) = 0 OR cardinality(billable_metrics) = 0 THEN
        PERFORM billing._invalid('plans and billable_metrics name at least one code when given',
            format('got plans %s and billable_metrics %s', plans, billable_metrics), 'leave them NULL for a coupon without limits');
    END IF;
    IF plans IS NOT NULL AND billable_metrics IS NOT NULL THEN
        PERFORM billing._invalid('a coupon is limited to plans or to billable metrics, not both',
            format('got plans %s and billable_metrics %s', plans, billable_metrics), 'create two coupons');
    END IF;
    SELECT p INTO unknown FROM unnest(plans) p WHERE NOT EXISTS (SELECT 1 FROM billing.plans x WHERE x.code = p) LIMIT 1;
    IF unknown IS NOT NULL THEN
        PERFORM billing._unknown('plan', unknown, 'create it with billing.create_plan');
    END IF;
    SELECT m INTO unknown FROM unnest(billable_metrics) m WHERE NOT EXISTS (SELECT 1 FROM billing.billable_metrics x WHERE x.code = m) LIMIT 1;
    IF unknown IS NOT NULL THEN
        PERFORM billing._unknown('billable metric', unknown, 'create it with billing.create_billable_metric');
    END IF;
    INSERT INTO billing.coupons (code, name, coupon_type, amount, currency, percentage_rate, frequency, frequency_duration, expires_at)
    VALUES (code, name, coupon_type::billing.coupon_type, amount,
            CASE WHEN currency IS NOT NULL THEN billing._check_currency(currency) END, percentage_rate,
            frequency::billing.coupon_frequency, frequency_duration, expires_at)
    RETURNING * INTO created;
    INSERT INTO billing.coupon_plans (coupon_id, plan_id)
    SELECT DISTINCT created.id, x.id FROM billing.plans x WHERE x.code = ANY (plans);
    INSERT INTO billing.coupon_billable_metrics (coupon_id, billable_metric_id)
    SELECT DISTINCT created.id, x.id FROM billing.billable_metrics x WHERE x.code = ANY (billable_metrics);
    RETURN created;
END $$;

-- Applies a coupon to a customer (amount overrides a fixed coupon's amount). 55000 once the
-- coupon has expired, 23505 while the customer has it active already, 22023 for a fixed
-- coupon in another currency than the customer's.
CREATE FUNCTION billing.apply_coupon(customer text, coupon text, amount numeric DEFAULT NULL)
RETURNS billing.applied_coupons
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    found_coupon billing.coupons := billing._coupon(coupon);
    cust billing.customers;
    applied billing.applied_coupons;
    fixed_amount numeric;
BEGIN
    cust := billing._customer(customer);
    IF found_coupon.expires_at <= now() THEN
        PERFORM billing._raise('55000', format('coupon "%s" has expired', coupon), format('it expired at %s', found_coupon.expires_at),
            'create a new coupon');
    END IF;
    IF found_coupon.coupon_type = 'fixed_amount' AND found_coupon.currency <> cust.currency THEN
        PERFORM billing._invalid(format('coupon "%s" is in %s, customer "%s" is billed in %s', coupon, found_coupon.currency, customer, cust.currency),
            format('got currency %s', found_coupon.currency), 'create the coupon in the customer''s currency');
    END IF;
    IF amount IS NOT NULL AND (found_coupon.coupon_type <> 'fixed_amount' OR amount <= 0
                               OR amount <> billing.round_money(amount, cust.currency)) THEN
        PERFORM billing._invalid('amount overrides the amount of a fixed_amount coupon: positive, with the currency''s decimals',
            format('got amount %s for a %s coupon in %s', amount, found_coupon.coupon_type, cust.currency),
            'leave amount NULL to use the coupon''s');
    END IF;
    IF EXISTS (SELECT 1 FROM billing.applied_coupons a WHERE a.customer_id = cust.id AND a.coupon_id = found_coupon.id AND a.status = 'active') THEN
        PERFORM billing._raise('23505', format('customer "%s" already has coupon "%s"', customer, coupon),
            'one active application of a coupon per customer', 'terminate it with billing.terminate_coupon first');
    END IF;
    fixed_amount := coalesce(amount, found_coupon.amount);
    INSERT INTO billing.applied_coupons (customer_id, coupon_id, amount, amount_remaining, percentage_rate, frequency, frequency_duration_remaining)
    VALUES (cust.id, found_coupon.id, fixed_amount, CASE WHEN found_coupon.frequency = 'once' THEN fixed_amount END,
            found_coupon.percentage_rate, found_coupon.frequency, found_coupon.frequency_duration)
    RETURNING * INTO applied;
    RETURN applied;
END $$;

-- Ends a customer's active application of a coupon; invoices finalized later get nothing
-- from it. 23503 when the customer has no such active coupon.
CREATE FUNCTION billing.terminate_coupon(customer text, coupon text)
RETURNS billing.applied_coupons
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    found_coupon billing.coupons := billing._coupon(coupon);
    customer_id bigint;
    terminated billing.applied_coupons;
BEGIN
    SELECT d.customer_id INTO customer_id FROM billing.customer_directory d WHERE d.external_id = customer;
    UPDATE billing.applied_coupons a SET status = 'terminated', terminated_at = now()
    WHERE a.customer_id = customer_id AND a.coupon_id = found_coupon.id AND a.status = 'active'
    RETURNING * INTO terminated;
    IF NOT FOUND THEN
        PERFORM billing._raise('23503', format('customer "%s" has no active coupon "%s"', customer, coupon),
            format('customer %s, coupon %s', customer, coupon), 'list them in billing.applied_coupons');
    END IF;
    RETURN terminated;
END $$;

-- Takes the customer's active coupons off an invoice being finalized (its fees are final):
-- records each coupon's amount, spreads it over the fees it covers and uses the coupons up.
-- Returns whether any coupon took something off: the caller then recomputes the totals.
CREATE FUNCTION billing._apply_coupons(inv billing.invoices) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    plan_id bigint;
    applied record;
    metric_codes text[];
    base numeric;
    -- What the invoice's fees still leave, negative ones (late usage that went down)
    -- included: no coupon takes the invoice below zero.
    invoice_left numeric;
    discount numeric;
    counted boolean;
    finished_at timestamptz := now();
    applied_any boolean := false;
BEGIN
    -- Coupons count billing periods: they come off the period's invoice, not the one-off
    -- or progressive-billing ones.
    IF inv.invoice_type <> 'subscription' THEN
        RETURN false;
    END IF;
    -- Two invoices of the customer finalized at once take turns on its coupons.
    PERFORM 1 FROM billing.applied_coupons a WHERE a.customer_id = inv.customer_id AND a.status = 'active' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT v.plan_id INTO plan_id FROM billing.subscriptions s JOIN billing.plan_versions v ON v.id = s.plan_version_id
    WHERE s.customer_id = inv.customer_id AND s.id = inv.subscription_id;
    FOR applied IN
        SELECT a.id, a.amount, a.amount_remaining, a.percentage_rate, a.frequency, a.frequency_duration_remaining,
               c.id AS coupon_id, c.code, c.name, c.coupon_type,
               EXISTS (SELECT 1 FROM billing.coupon_billable_metrics x WHERE x.coupon_id = c.id) AS metric_limited,
               EXISTS (SELECT 1 FROM billing.coupon_plans x WHERE x.coupon_id = c.id) AS plan_limited,
               EXISTS (SELECT 1 FROM billing.coupon_plans x WHERE x.coupon_id = c.id AND x.plan_id = plan_id) AS plan_covered,
               a.created_at
        FROM billing.applied_coupons a JOIN billing.coupons c ON c.id = a.coupon_id
        WHERE a.customer_id = inv.customer_id AND a.status = 'active'
        ORDER BY metric_limited DESC, plan_limited DESC, a.created_at, a.id
    LOOP
        CONTINUE WHEN applied.plan_limited AND NOT applied.plan_covered;
        -- A recurring coupon counts billing periods: the invoices of one issuing day (a
        -- customer's subscriptions billed together) count once, and all get it. Used up, it
        -- ends at the first invoice of the next period.
        counted := NOT EXISTS (
            SELECT 1 FROM billing.invoice_coupons ic JOIN billing.invoices i ON i.customer_id = ic.customer_id AND i.id = ic.invoice_id
            WHERE ic.customer_id = inv.customer_id AND ic.applied_coupon_id = applied.id AND i.issuing_date = inv.issuing_date);
        IF applied.frequency = 'recurring' AND counted AND applied.frequency_duration_remaining = 0 THEN
            UPDATE billing.applied_coupons a SET status = 'terminated', terminated_at = finished_at
            WHERE a.customer_id = inv.customer_id AND a.id = applied.id;
            CONTINUE;
        END IF;
        metric_codes := CASE WHEN applied.metric_limited THEN ARRAY(
            SELECT m.code FROM billing.coupon_billable_metrics x JOIN billing.billable_metrics m ON m.id = x.billable_metric_id
            WHERE x.coupon_id = applied.coupon_id) END;
        SELECT coalesce(sum(greatest(fe.amount - fe.progressive_credit_amount - fe.precise_coupons_amount, 0))
                            FILTER (WHERE metric_codes IS NULL OR fe.billable_metric_code = ANY (metric_codes)), 0),
               coalesce(sum(fe.amount - fe.progressive_credit_amount - fe.precise_coupons_amount), 0)
        INTO base, invoice_left
        FROM billing.fees fe
        WHERE fe.customer_id = inv.customer_id AND fe.invoice_id = inv.id AND fe.invoiceable;
        base := least(base, invoice_left);
        CONTINUE WHEN base <= 0;
        -- Fixed amounts have the currency's decimals (create_coupon, apply_coupon): rounding
        -- them only writes them with those decimals.
        discount := billing.round_money(CASE applied.coupon_type
            WHEN 'fixed_amount' THEN least(coalesce(applied.amount_remaining, applied.amount), base)
            ELSE base * applied.percentage_rate * 0.01 END, inv.currency);
        CONTINUE WHEN discount <= 0;
        -- Spread pro rata over the covered fees with something left (their sum, not the capped
        -- base: the shares add up to the discount).
        UPDATE billing.fees fe
        SET precise_coupons_amount = fe.precise_coupons_amount
            + least(fe.amount - fe.progressive_credit_amount - fe.precise_coupons_amount, round(discount * (fe.amount - fe.progressive_credit_amount - fe.precise_coupons_amount) / covered.total, 5))
        FROM (SELECT sum(x.amount - x.progressive_credit_amount - x.precise_coupons_amount) AS total FROM billing.fees x
              WHERE x.customer_id = inv.customer_id AND x.invoice_id = inv.id AND x.invoiceable
                AND (metric_codes IS NULL OR x.billable_metric_code = ANY (metric_codes))
                AND x.amount - x.progressive_credit_amount - x.precise_coupons_amount > 0) covered
        WHERE fe.customer_id = inv.customer_id AND fe.invoice_id = inv.id AND fe.invoiceable
          AND (metric_codes IS NULL OR fe.billable_metric_code = ANY (metric_codes))
          AND fe.amount - fe.progressive_credit_amount - fe.precise_coupons_amount > 0;
        INSERT INTO billing.invoice_coupons (customer_id, invoice_id, applied_coupon_id, coupon_code, coupon_name, amount)
        VALUES (inv.customer_id, inv.id, applied.id, applied.code, applied.name, discount);
        applied_any := true;
        UPDATE billing.applied_coupons a
        SET amount_remaining = a.amount_remaining - CASE WHEN a.frequency = 'once' AND a.amount_remaining IS NOT NULL THEN discount ELSE 0 END,
            frequency_duration_remaining = a.frequency_duration_remaining - CASE WHEN a.frequency = 'recurring' AND counted THEN 1 ELSE 0 END,
            status = CASE WHEN a.frequency = 'once' AND (a.amount_remaining IS NULL OR a.amount_remaining = discount) THEN 'terminated'
                          ELSE a.status END,
            terminated_at = CASE WHEN a.frequency = 'once' AND (a.amount_remaining IS NULL OR a.amount_remaining = discount)
                                 THEN finished_at END
        WHERE a.customer_id = inv.customer_id AND a.id = applied.id;
    END LOOP;
    RETURN applied_any;
END $$;

REVOKE ALL ON FUNCTION billing._coupon(text), billing._apply_coupons(billing.invoices) FROM PUBLIC;

-- pg_dump keeps the rows (the tables belong to the extension).
SELECT pg_catalog.pg_extension_config_dump('billing.coupons', '');
SELECT pg_catalog.pg_extension_config_dump('billing.coupons_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.coupon_plans', '');
SELECT pg_catalog.pg_extension_config_dump('billing.coupon_billable_metrics', '');
SELECT pg_catalog.pg_extension_config_dump('billing.applied_coupons', '');
SELECT pg_catalog.pg_extension_config_dump('billing.applied_coupons_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.invoice_coupons', '');

-- Add-ons and one-off invoices (sql/one_off.sql): their invoices and fees have no
-- subscription; a fee may name its own taxes.
ALTER TYPE billing.invoice_type ADD VALUE 'one_off';
ALTER TYPE billing.fee_type ADD VALUE 'add_on';
ALTER TABLE billing.fees ALTER COLUMN subscription_id DROP NOT NULL;
ALTER TABLE billing.fees ADD COLUMN add_on_id bigint;
ALTER TABLE billing.fees ADD COLUMN tax_ids bigint[];

-- Add-ons and one-off invoices: a catalog of one-off items with a default price, and
-- invoices of such items (or free-form lines) outside any subscription, finalized at once.
CREATE TABLE billing.add_ons (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code text NOT NULL UNIQUE CHECK (code <> ''),
    name text NOT NULL,
    description text,
    amount numeric NOT NULL CHECK (amount >= 0),
    currency text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The taxes of an add-on's items when the item names none (before the customer's and the
-- billing entity's).
CREATE TABLE billing.add_on_taxes (
    add_on_id bigint NOT NULL REFERENCES billing.add_ons,
    tax_id bigint NOT NULL REFERENCES billing.taxes,
    PRIMARY KEY (add_on_id, tax_id)
);

CREATE FUNCTION billing.create_add_on(code text, name text, amount numeric, currency text, description text DEFAULT NULL)
RETURNS billing.add_ons
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    created billing.add_ons;
BEGIN
    IF coalesce(btrim(code), '') = '' OR coalesce(btrim(name), '') = '' THEN
        PERFORM billing._invalid('an add-on needs a code and a name', format('got code "%s" and name "%s"', code, name),
            'billing.create_add_on(''setup'', ''Setup fee'', 500, ''EUR'')');
    END IF;
    IF currency IS NULL THEN
        PERFORM billing._invalid('an add-on needs a currency', 'got NULL', 'billing.create_add_on(''setup'', ''Setup fee'', 500, ''EUR'')');
    END IF;
    IF amount IS NULL OR amount < 0 OR amount <> billing.round_money(amount, billing._check_currency(currency)) THEN
        PERFORM billing._invalid(format('an add-on''s amount is 0 or more, with the decimals of %s', currency), format('got %s', amount),
            format('give the amount in %s with at most %s decimals', currency, billing.currency_minor_units(currency)));
    END IF;
    INSERT INTO billing.add_ons (code, name, description, amount, currency)
    VALUES (code, name, description, amount, currency)
    RETURNING * INTO created;
    RETURN created;
END $$;

-- An invoice of one-off items for a customer, finalized at once (numbered, due, announced).
-- Each item: {"add_on_code"?, "description"?, "units"? (default 1), "unit_amount"?,
-- "tax_codes"?}; an add-on gives the defaults of description and unit amount. An item's
-- tax_codes are its taxes; without them, its add-on's; without those, the customer's, else
-- the billing entity's. Coupons apply to subscription invoices only.
CREATE FUNCTION billing.create_one_off_invoice(customer text, items jsonb)
RETURNS billing.invoices
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    cust billing.customers;
    item jsonb;
    position integer := 0;
    add_on billing.add_ons;
    units numeric;
    unit_amount numeric;
    description text;
    tax_ids bigint[];
    invoice_id bigint;
    at timestamptz := now();
    inv billing.invoices;
BEGIN
    cust := billing._customer(customer);
    IF jsonb_typeof(items) IS DISTINCT FROM 'array' OR jsonb_array_length(items) = 0 THEN
        PERFORM billing._invalid('items must be a non-empty JSON array of one-off items', format('got %s', items),
            'write [{"add_on_code": "setup"}] or [{"description": "Consulting", "units": 3, "unit_amount": "150"}]');
    END IF;
    INSERT INTO billing.invoices (customer_id, invoice_type, billing_entity_id, currency, timezone, billing_at, issuing_date)
    VALUES (cust.id, 'one_off', cust.billing_entity_id, cust.currency, cust.timezone, at, (at AT TIME ZONE cust.timezone)::date)
    RETURNING id INTO invoice_id;
    FOR item IN SELECT value FROM jsonb_array_elements(items) LOOP
        position := position + 1;
        IF jsonb_typeof(item) IS DISTINCT FROM 'object' THEN
            PERFORM billing._invalid(format('items[%s] must be a JSON object', position), format('got %s', item),
                'write {"add_on_code": "setup", "units": 1}');
        END IF;
        add_on := NULL;
        IF item ? 'add_on_code' AND jsonb_typeof(item -> 'add_on_code') IS DISTINCT FROM 'string' THEN
            PERFORM billing._invalid(format('items[%s].add_on_code must be an add-on''s code', position),
                format('got %s', item -> 'add_on_code'), 'write "add_on_code": "setup"');
        END IF;
        IF item ? 'add_on_code' THEN
            SELECT * INTO add_on FROM billing.add_ons a WHERE a.code = item ->> 'add_on_code';
            IF NOT FOUND THEN
                PERFORM billing._unknown('add-on', item ->> 'add_on_code', 'create it with billing.create_add_on');
            END IF;
            IF add_on.currency <> cust.currency THEN
                PERFORM billing._invalid(format('add-on "%s" is priced in %s, customer "%s" is billed in %s', add_on.code,
                                                add_on.currency, customer, cust.currency),
                    format('items[%s]', position), 'give unit_amount in the customer''s currency, or use an add-on in it');
            END IF;
        END IF;
        BEGIN
            units := coalesce((item ->> 'units')::numeric, 1);
            unit_amount := coalesce((item ->> 'unit_amount')::numeric, add_on.amount);
        EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
            PERFORM billing._invalid(format('items[%s].units and unit_amount must be numbers', position),
                format('got %s', item),
                'write "units": 3, "unit_amount": "150"');
        END;
        description := coalesce(item ->> 'description', add_on.name);
        -- NaN sorts above every number: the Infinity bounds refuse it too.
        IF NOT (units > 0 AND units < 'Infinity') OR NOT coalesce(unit_amount >= 0 AND unit_amount < 'Infinity', false)
           OR description IS NULL THEN
            PERFORM billing._invalid(format('items[%s] needs positive units, a unit amount of 0 or more and a description (or an add-on)', position),
                format('got %s', item), 'write {"description": "Consulting", "units": 3, "unit_amount": "150"}');
        END IF;
        IF item ? 'tax_codes' THEN
            IF jsonb_typeof(item -> 'tax_codes') <> 'array' THEN
                PERFORM billing._invalid(format('items[%s].tax_codes must be an array of tax codes', position),
                    format('got %s', item -> 'tax_codes'), 'write "tax_codes": ["vat_fr"]');
            END IF;
            SELECT coalesce(array_agg(DISTINCT (billing._tax(c)).id), '{}') INTO tax_ids FROM jsonb_array_elements_text(item -> 'tax_codes') c;
        ELSE
            SELECT array_agg(x.tax_id ORDER BY x.tax_id) INTO tax_ids FROM billing.add_on_taxes x WHERE x.add_on_id = add_on.id;
        END IF;
        INSERT INTO billing.fees (customer_id, invoice_id, fee_type, fee_key, description, units, precise_unit_amount, precise_amount,
                                  amount, from_datetime, to_datetime, add_on_id, tax_ids)
        VALUES (cust.id, invoice_id, 'add_on', format('add_on:%s:%s', invoice_id, position), description, units, unit_amount,
                units * unit_amount, billing.round_money(units * unit_amount, cust.currency), at, at, add_on.id, tax_ids);
    END LOOP;
    PERFORM billing._total_invoice(cust.id, invoice_id);
    SELECT * INTO inv FROM billing.invoices i WHERE i.customer_id = cust.id AND i.id = invoice_id;
    PERFORM billing._emit(cust.id, 'invoice.created', billing._invoice_event(inv));
    RETURN billing._finalize(inv);
END $$;

REVOKE ALL ON FUNCTION billing.create_add_on(text, text, numeric, text, text), billing.create_one_off_invoice(text, jsonb) FROM PUBLIC;

-- pg_dump keeps the rows (the tables belong to the extension).
SELECT pg_catalog.pg_extension_config_dump('billing.add_ons', '');
SELECT pg_catalog.pg_extension_config_dump('billing.add_ons_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.add_on_taxes', '');

-- Fixed charges (sql/fixed_charges.sql).
ALTER TYPE billing.fee_type ADD VALUE 'fixed_charge';

-- Fixed charges: a plan's charges for units of an add-on that no event measures (seats, a
-- support tier), priced standard, graduated or volume, in advance or in arrears, optionally
-- prorated. A subscription bills the plan's default units unless it sets its own; a change
-- of units during a period is prorated by the days each count was in force, as prorated
-- charges are (pricing.md): Σ units × days / period days, rounded up at 5 decimals.
CREATE TABLE billing.fixed_charges (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plan_version_id bigint NOT NULL REFERENCES billing.plan_versions,
    add_on_id bigint NOT NULL REFERENCES billing.add_ons,
    -- The price as canonical JSON, as billing.charges.price.
    price jsonb NOT NULL CHECK (billing.price(price)::jsonb = price AND price ->> 'charge_model' IN ('standard', 'graduated', 'volume')),
    units numeric NOT NULL DEFAULT 1 CHECK (units >= 0),
    pay_in_advance boolean NOT NULL DEFAULT false,
    prorated boolean NOT NULL DEFAULT false,
    UNIQUE (plan_version_id, add_on_id)
);

-- A subscription's own units of a fixed charge, from an instant on (the latest one at or
-- before an instant is in force then).
CREATE TABLE billing.subscription_fixed_charge_units (
    customer_id bigint NOT NULL,
    subscription_id bigint NOT NULL,
    fixed_charge_id bigint NOT NULL REFERENCES billing.fixed_charges,
    effective_at timestamptz NOT NULL,
    units numeric NOT NULL CHECK (units >= 0),
    PRIMARY KEY (customer_id, subscription_id, fixed_charge_id, effective_at)
);

-- Adds a fixed charge to a plan's current version: the add-on's units, priced with
-- charge_model (standard, graduated or volume) and its properties, as Lago spells them.
CREATE FUNCTION billing.add_fixed_charge(
    plan text, add_on text, charge_model text, properties jsonb, units numeric DEFAULT 1,
    pay_in_advance boolean DEFAULT false, prorated boolean DEFAULT false
) RETURNS billing.fixed_charges
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    version billing.plan_versions;
    found_add_on billing.add_ons;
    created billing.fixed_charges;
BEGIN
    version := billing._plan_version(plan);
    SELECT * INTO found_add_on FROM billing.add_ons a WHERE a.code = add_on;
    IF NOT FOUND THEN
        PERFORM billing._unknown('add-on', add_on, 'create it with billing.create_add_on');
    END IF;
    PERFORM billing._check_label('fixed charge model', charge_model, ARRAY['standard', 'graduated', 'volume']);
    IF NOT coalesce(units >= 0 AND units < 'Infinity', false) THEN
        PERFORM billing._invalid('units must be 0 or more', format('got %s', units), 'give the default number of units, such as 1');
    END IF;
    IF found_add_on.currency <> version.currency THEN
        PERFORM billing._invalid(format('add-on "%s" is priced in %s, plan "%s" in %s', add_on, found_add_on.currency, plan, version.currency),
            format('got add-on %s', add_on), 'use an add-on in the plan''s currency');
    END IF;
    INSERT INTO billing.fixed_charges (plan_version_id, add_on_id, price, units, pay_in_advance, prorated)
    VALUES (version.id, found_add_on.id,
            billing.price(jsonb_build_object('charge_model', charge_model, 'properties', coalesce(properties, '{}')))::jsonb,
            units, coalesce(pay_in_advance, false), coalesce(prorated, false))
    RETURNING * INTO created;
    RETURN created;
END $$;

-- Sets a subscription's units of a fixed charge (by add-on code) from `at` on.
CREATE FUNCTION billing.set_fixed_charge_units(external_subscription_id text, add_on text, units numeric, at timestamptz DEFAULT now())
RETURNS numeric
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    sub billing.subscriptions := billing._subscription(external_subscription_id);
    charge billing.fixed_charges;
BEGIN
    SELECT fc.* INTO charge FROM billing.fixed_charges fc JOIN billing.add_ons a ON a.id = fc.add_on_id
    WHERE fc.plan_version_id = sub.plan_version_id AND a.code = add_on;
    IF NOT FOUND THEN
        PERFORM billing._unknown('fixed charge', add_on, 'add it to the plan with billing.add_fixed_charge');
    END IF;
    IF NOT coalesce(units >= 0 AND units < 'Infinity', false) OR at IS NULL OR NOT isfinite(at) THEN
        PERFORM billing._invalid('units must be 0 or more, from a finite instant', format('got %s from %s', units, at),
            'billing.set_fixed_charge_units(''sub'', ''seats'', 12, now())');
    END IF;
    INSERT INTO billing.subscription_fixed_charge_units AS u (customer_id, subscription_id, fixed_charge_id, effective_at, units)
    VALUES (sub.customer_id, sub.id, charge.id, at, units)
    ON CONFLICT (customer_id, subscription_id, fixed_charge_id, effective_at) DO UPDATE SET units = excluded.units;
    RETURN units;
END $$;

-- The fees of a subscription's fixed charges for one period (from_day to to_day, billed
-- from `billed_from` to `billed_to`, named period_key in the fees' keys), paid in advance or
-- in arrears as `in_advance` says.
-- Units: those in force at the start of what is billed, or, prorated, each count weighted
-- by its days in it over the period's days.
CREATE FUNCTION billing._add_fixed_charge_fees(
    sub billing.subscriptions, cust billing.customers, invoice_id bigint, in_advance boolean, from_day date, to_day date,
    billed_from timestamptz, billed_to timestamptz, period_key text
) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    charge record;
    billed_from_day date := (billed_from AT TIME ZONE cust.timezone)::date;
    billed_to_day date := (billed_to AT TIME ZONE cust.timezone)::date;
    units numeric;
BEGIN
    FOR charge IN
        SELECT fc.id, fc.price, fc.units AS default_units, fc.prorated, fc.add_on_id, a.name,
               (SELECT array_agg(x.tax_id ORDER BY x.tax_id) FROM billing.add_on_taxes x WHERE x.add_on_id = fc.add_on_id) AS tax_ids
        FROM billing.fixed_charges fc JOIN billing.add_ons a ON a.id = fc.add_on_id
        WHERE fc.plan_version_id = sub.plan_version_id AND fc.pay_in_advance = in_advance
        ORDER BY fc.id
    LOOP
        IF charge.prorated THEN
            -- Each count from the day it took effect (or the first billed day) to the day
            -- before the next (or the last billed day).
            -- The count in force on each day: the latest set on or before it (the plan's
            -- default before any), from its day to the day before the next.
            SELECT billing._prorate(coalesce(sum(s.units * (coalesce(s.next_day - 1, billed_to_day) - s.from_day + 1)), 0),
                                    to_day - from_day + 1)
            INTO units
            FROM (SELECT c.units, c.from_day, lead(c.from_day) OVER (ORDER BY c.from_day) AS next_day
                  FROM (SELECT DISTINCT ON (d.from_day) d.units, d.from_day
                        FROM (SELECT charge.default_units AS units, billed_from_day AS from_day, '-infinity'::timestamptz AS effective_at
                              UNION ALL
                              SELECT u.units, greatest((u.effective_at AT TIME ZONE cust.timezone)::date, billed_from_day), u.effective_at
                              FROM unnest(billing._fixed_charge_units(sub.customer_id, sub.id, charge.id, billed_to)) u) d
                        ORDER BY d.from_day, d.effective_at DESC) c) s;
        ELSE
            SELECT coalesce((SELECT u.units FROM unnest(billing._fixed_charge_units(sub.customer_id, sub.id, charge.id,
                                                                                     CASE WHEN in_advance THEN billed_from ELSE billed_to END)) u
                             ORDER BY u.effective_at DESC LIMIT 1), charge.default_units)
            INTO units;
        END IF;
        INSERT INTO billing.fees (customer_id, invoice_id, subscription_id, fee_type, fee_key, description, units,
                                  precise_unit_amount, precise_amount, amount, amount_details, from_datetime, to_datetime, add_on_id, tax_ids)
        VALUES (sub.customer_id, invoice_id, sub.id, 'fixed_charge', format('fixed_charge:%s:%s', charge.id, period_key),
                charge.name, units,
                CASE WHEN units = 0 THEN 0 ELSE billing.amount(charge.price::billing.price, units) / units END,
                billing.amount(charge.price::billing.price, units),
                billing.round_money(billing.amount(charge.price::billing.price, units), cust.currency),
                billing.amount_details(charge.price::billing.price, units), billed_from, billed_to, charge.add_on_id, charge.tax_ids);
    END LOOP;
END $$;

-- A subscription's own units of a fixed charge in force at or before `until`, oldest first.
-- (PL/pgSQL, read apart: on Citus the fee insert runs on the customer's shard.)
CREATE FUNCTION billing._fixed_charge_units(customer_id bigint, subscription_id bigint, fixed_charge_id bigint, until timestamptz)
RETURNS billing.subscription_fixed_charge_units[]
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
BEGIN
    RETURN ARRAY(SELECT u FROM billing.subscription_fixed_charge_units u
                 WHERE u.customer_id = customer_id AND u.subscription_id = subscription_id AND u.fixed_charge_id = fixed_charge_id
                   AND u.effective_at <= until ORDER BY u.effective_at);
END $$;

REVOKE ALL ON FUNCTION billing.add_fixed_charge(text, text, text, jsonb, numeric, boolean, boolean),
    billing.set_fixed_charge_units(text, text, numeric, timestamptz),
    billing._add_fixed_charge_fees(billing.subscriptions, billing.customers, bigint, boolean, date, date, timestamptz, timestamptz, text),
    billing._fixed_charge_units(bigint, bigint, bigint, timestamptz) FROM PUBLIC;

-- pg_dump keeps the rows (the tables belong to the extension).
SELECT pg_catalog.pg_extension_config_dump('billing.fixed_charges', '');
SELECT pg_catalog.pg_extension_config_dump('billing.fixed_charges_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.subscription_fixed_charge_units', '');

-- Progressive billing (sql/progressive.sql): its invoices, and each usage fee's credit.
ALTER TYPE billing.invoice_type ADD VALUE 'progressive_billing';
ALTER TABLE billing.fees ADD COLUMN progressive_credit_amount numeric NOT NULL DEFAULT 0;

-- Progressive billing: a plan version's usage thresholds, compared by the billing run with
-- each subscription's lifetime usage amount (its usage invoiced so far plus the open
-- period's). Crossing one issues a progressive-billing invoice for the open period's usage
-- less what earlier such invoices of the period billed; the period's invoice then bills all
-- of its usage and deducts theirs as a progressive-billing credit, before coupons and tax.
-- A fixed threshold fires once per subscription; a recurring one every time lifetime usage
-- grows by its amount past the highest fixed one. The lag is at most one billing run.
CREATE TABLE billing.usage_thresholds (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plan_version_id bigint NOT NULL REFERENCES billing.plan_versions,
    amount numeric NOT NULL CHECK (amount > 0),
    recurring boolean NOT NULL DEFAULT false,
    name text,
    UNIQUE (plan_version_id, amount, recurring)
);
CREATE UNIQUE INDEX usage_thresholds_one_recurring ON billing.usage_thresholds (plan_version_id) WHERE recurring;

-- Each threshold level a subscription crossed, with the invoice it issued. A level is known
-- by its amount and kind, not by the threshold's row: thresholds replaced later
-- (billing.set_usage_thresholds) keep the levels crossed under them.
CREATE TABLE billing.applied_usage_thresholds (
    customer_id bigint NOT NULL,
    subscription_id bigint NOT NULL,
    recurring boolean NOT NULL,
    -- The lifetime usage amount crossed: a fixed threshold's amount, or for the recurring one
    -- the highest fixed amount plus a multiple of its own.
    level numeric NOT NULL,
    lifetime_usage_amount numeric NOT NULL,
    -- NULL when the open period had nothing left to bill (its usage was on invoices already).
    invoice_id bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, subscription_id, recurring, level),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES billing.invoices (customer_id, id)
);

-- Replaces the usage thresholds of a plan's current version: [{"amount": ..., "recurring":
-- false, "name": ...}]; at most one recurring. Returns how many it has.
CREATE FUNCTION billing.set_usage_thresholds(plan text, thresholds jsonb) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    version billing.plan_versions;
    threshold jsonb;
    position integer := 0;
    amount numeric;
BEGIN
    version := billing._plan_version(plan);
    -- Two calls for one version take turns.
    PERFORM 1 FROM billing.plan_versions v WHERE v.id = version.id FOR UPDATE;
    IF jsonb_typeof(thresholds) IS DISTINCT FROM 'array' THEN
        PERFORM billing._invalid('thresholds must be a JSON array', format('got %s', thresholds),
            'write [{"amount": "100"}, {"amount": "50", "recurring": true}], or [] to remove them');
    END IF;
    IF (SELECT count(*) FROM jsonb_array_elements(thresholds) t WHERE t -> 'recurring' = 'true') > 1
       OR (SELECT count(DISTINCT (t ->> 'amount', coalesce(t ->> 'recurring', 'false'))) <> count(*) FROM jsonb_array_elements(thresholds) t) THEN
        PERFORM billing._invalid('a plan version has at most one recurring threshold, and each amount once', format('got %s', thresholds),
            'keep one recurring threshold; the others fixed, each its own amount');
    END IF;
    DELETE FROM billing.usage_thresholds t WHERE t.plan_version_id = version.id;
    FOR threshold IN SELECT value FROM jsonb_array_elements(thresholds) LOOP
        position := position + 1;
        BEGIN
            amount := (threshold ->> 'amount')::numeric;
        EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
            amount := NULL;
        END;
        IF jsonb_typeof(threshold) IS DISTINCT FROM 'object' OR NOT coalesce(amount > 0 AND amount < 'Infinity', false)
           OR amount <> billing.round_money(amount, version.currency)
           OR jsonb_typeof(coalesce(threshold -> 'recurring', 'false')) <> 'boolean' THEN
            PERFORM billing._invalid(format('thresholds[%s] needs a positive amount with the decimals of %s, and recurring true or false',
                                            position, version.currency),
                format('got %s', threshold), 'write {"amount": "100", "recurring": false}');
        END IF;
        INSERT INTO billing.usage_thresholds (plan_version_id, amount, recurring, name)
        VALUES (version.id, amount, coalesce((threshold ->> 'recurring')::boolean, false), threshold ->> 'name');
    END LOOP;
    RETURN position;
END $$;

-- A subscription's lifetime usage amount at as_of: the usage of its subscription invoices
-- (voided ones aside) and that of the open period, from its start to as_of.
CREATE FUNCTION billing._lifetime_usage(sub billing.subscriptions, cust billing.customers, window_from timestamptz, as_of timestamptz)
RETURNS numeric
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    invoiced numeric;
    open_period numeric;
    in_advance bigint[];
BEGIN
    SELECT coalesce(sum(fe.precise_amount), 0) INTO invoiced
    FROM billing.fees fe JOIN billing.invoices i ON i.customer_id = fe.customer_id AND i.id = fe.invoice_id
    WHERE fe.customer_id = sub.customer_id AND fe.subscription_id = sub.id AND fe.fee_type IN ('charge', 'adjustment')
      AND i.invoice_type = 'subscription' AND i.status <> 'voided' AND fe.from_datetime < window_from;
    -- Lines without usage do not count (a first tier's flat fee at zero units), nor charges
    -- paid in advance, billed as they happen.
    in_advance := ARRAY(SELECT c.id FROM billing.charges c WHERE c.plan_version_id = sub.plan_version_id AND c.pay_in_advance);
    SELECT coalesce(sum(u.amount), 0) INTO open_period FROM billing._usage(sub, cust, window_from, as_of) u
    WHERE (u.units <> 0 OR u.events_count <> 0) AND NOT u.charge_id = ANY (in_advance);
    RETURN invoiced + open_period;
END $$;

-- Checks a subscription's thresholds at as_of and, if it crossed any, creates the
-- progressive-billing invoice with its fees. Returns its id, or NULL; the caller totals,
-- announces and finalizes it as any other.
CREATE FUNCTION billing._bill_usage_thresholds(sub billing.subscriptions, cust billing.customers, as_of timestamptz)
RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    bounds record;
    window_from timestamptz;
    lifetime numeric;
    highest_fixed numeric;
    recurring billing.usage_thresholds;
    crossed jsonb;
    lines billing.usage_line[];
    invoice_id bigint;
BEGIN
    -- Active until the termination (a scheduled one included).
    IF sub.status = 'pending' OR as_of >= coalesce(sub.terminated_at, 'infinity')
       OR NOT EXISTS (SELECT 1 FROM billing.usage_thresholds t WHERE t.plan_version_id = sub.plan_version_id) THEN
        RETURN NULL;
    END IF;
    -- Not at an instant that has an invoice of the subscription already (a period's close),
    -- nor in a period already invoiced (billing as of an earlier instant than before).
    IF EXISTS (SELECT 1 FROM billing.invoices i WHERE i.customer_id = sub.customer_id AND i.subscription_id = sub.id
               AND (i.billing_at = as_of OR (i.billing_at > as_of AND i.invoice_type = 'subscription'))) THEN
        RETURN NULL;
    END IF;
    SELECT * INTO bounds FROM billing.period_bounds(
        (SELECT v.interval::text FROM billing.plan_versions v WHERE v.id = sub.plan_version_id), sub.billing_time::text,
        (coalesce(sub.started_at, sub.subscription_at) AT TIME ZONE cust.timezone)::date, as_of, cust.timezone);
    -- From the period's start, or the start of the plan in force (after a plan change).
    window_from := greatest(bounds.from_datetime, (billing._in_force(sub, as_of)).since);
    lifetime := billing._lifetime_usage(sub, cust, window_from, as_of);
    SELECT max(t.amount) INTO highest_fixed FROM billing.usage_thresholds t WHERE t.plan_version_id = sub.plan_version_id AND NOT t.recurring;
    SELECT * INTO recurring FROM billing.usage_thresholds t WHERE t.plan_version_id = sub.plan_version_id AND t.recurring;
    -- The levels crossed and not applied yet, as (recurring, level) pairs: the fixed
    -- thresholds reached, and the recurring one's highest step reached if it is above the
    -- highest recorded (one row stands for the steps up to it).
    SELECT jsonb_agg(jsonb_build_array(c.recurring, c.level) ORDER BY c.level) INTO crossed
    FROM (SELECT false AS recurring, t.amount AS level FROM billing.usage_thresholds t
          WHERE t.plan_version_id = sub.plan_version_id AND NOT t.recurring AND t.amount <= lifetime
            AND NOT EXISTS (SELECT 1 FROM billing.applied_usage_thresholds a
                            WHERE a.customer_id = sub.customer_id AND a.subscription_id = sub.id AND NOT a.recurring AND a.level = t.amount)
          UNION ALL
          SELECT true, s.level
          FROM (SELECT coalesce(highest_fixed, 0)
                       + floor(greatest(lifetime - coalesce(highest_fixed, 0), 0) / recurring.amount) * recurring.amount AS level) s
          WHERE recurring.id IS NOT NULL AND s.level > coalesce(highest_fixed, 0)
            AND s.level > coalesce((SELECT max(a.level) FROM billing.applied_usage_thresholds a
                                    WHERE a.customer_id = sub.customer_id AND a.subscription_id = sub.id AND a.recurring), 0)) c;
    IF crossed IS NULL THEN
        RETURN NULL;
    END IF;
    INSERT INTO billing.invoices (customer_id, subscription_id, billing_entity_id, invoice_type, currency, timezone, billing_at,
                                  issuing_date, charges_from, charges_to)
    VALUES (sub.customer_id, sub.id, cust.billing_entity_id, 'progressive_billing', cust.currency, cust.timezone, as_of,
            (as_of AT TIME ZONE cust.timezone)::date, window_from, as_of)
    RETURNING id INTO invoice_id;
    -- Each usage line of the open period, less what earlier progressive invoices of the
    -- period billed for it. (Usage computed apart: on Citus the insert below runs on the
    -- customer's shard, where a function reading distributed tables cannot.)
    lines := ARRAY(SELECT u FROM billing._usage(sub, cust, window_from, as_of) u);
    INSERT INTO billing.fees (customer_id, invoice_id, subscription_id, fee_type, fee_key, charge_id, charge_filter_id,
                              billable_metric_code, charge_model, filter_values, grouped_by, description, units, events_count,
                              precise_unit_amount, precise_amount, amount, invoiceable, from_datetime, to_datetime)
    SELECT sub.customer_id, invoice_id, sub.id, 'charge', billing._usage_fee_key('progressive', u.charge_id, u.filter_id, u.grouped_by, window_from, as_of),
           u.charge_id, u.filter_id, u.billable_metric_code, u.charge_model, u.filter_values, nullif(u.grouped_by, '{}'::jsonb),
           m.name, u.units, u.events_count, 0, u.amount - coalesce(earlier.amount, 0),
           billing.round_money(u.amount - coalesce(earlier.amount, 0), cust.currency), ch.invoiceable, window_from, as_of
    FROM unnest(lines) u
    -- (Charges paid in advance are billed as they happen.)
    JOIN billing.charges ch ON ch.id = u.charge_id AND NOT ch.pay_in_advance
    JOIN billing.billable_metrics m ON m.id = ch.billable_metric_id
    LEFT JOIN (SELECT fe.charge_id, fe.charge_filter_id, coalesce(fe.grouped_by, '{}'::jsonb) AS grouped_by, sum(fe.precise_amount) AS amount
               FROM billing.fees fe JOIN billing.invoices i ON i.customer_id = fe.customer_id AND i.id = fe.invoice_id
               WHERE fe.customer_id = sub.customer_id AND fe.subscription_id = sub.id AND i.invoice_type = 'progressive_billing'
                 AND i.status <> 'voided' AND fe.from_datetime = window_from
               GROUP BY 1, 2, 3) earlier
      ON earlier.charge_id = u.charge_id AND earlier.charge_filter_id IS NOT DISTINCT FROM u.filter_id AND earlier.grouped_by = u.grouped_by
    WHERE u.amount - coalesce(earlier.amount, 0) > 0 AND (u.units <> 0 OR u.events_count <> 0);
    -- Nothing left to bill (the usage is on invoices already): the levels are crossed all the
    -- same, without an invoice.
    IF NOT EXISTS (SELECT 1 FROM billing.fees fe WHERE fe.customer_id = sub.customer_id AND fe.invoice_id = invoice_id) THEN
        DELETE FROM billing.invoices i WHERE i.customer_id = sub.customer_id AND i.id = invoice_id;
        invoice_id := NULL;
    END IF;
    INSERT INTO billing.applied_usage_thresholds (customer_id, subscription_id, recurring, level, lifetime_usage_amount, invoice_id)
    SELECT sub.customer_id, sub.id, (c ->> 0)::boolean, (c ->> 1)::numeric, lifetime, invoice_id FROM jsonb_array_elements(crossed) c;
    RETURN invoice_id;
END $$;

-- The progressive-billing credit of a subscription invoice's usage fees: for each usage
-- line, what the period's progressive invoices billed for it, at most the fee.
CREATE FUNCTION billing._credit_progressive_billing(customer_id bigint, invoice_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    inv billing.invoices;
BEGIN
    -- A customer that never crossed a threshold has no progressive invoice to deduct.
    IF NOT EXISTS (SELECT 1 FROM billing.applied_usage_thresholds a WHERE a.customer_id = customer_id) THEN
        RETURN;
    END IF;
    SELECT * INTO inv FROM billing.invoices i WHERE i.customer_id = customer_id AND i.id = invoice_id;
    IF inv.invoice_type <> 'subscription' OR NOT EXISTS (
        SELECT 1 FROM billing.invoices i WHERE i.customer_id = customer_id AND i.subscription_id = inv.subscription_id
          AND i.invoice_type = 'progressive_billing') THEN
        RETURN;
    END IF;
    UPDATE billing.fees fe SET progressive_credit_amount = least(fe.amount, greatest(coalesce(billed.amount, 0), 0))
    FROM (SELECT fe2.id, (SELECT sum(pf.amount) FROM billing.fees pf
                          JOIN billing.invoices pi ON pi.customer_id = pf.customer_id AND pi.id = pf.invoice_id
                          WHERE pf.customer_id = fe2.customer_id AND pf.subscription_id = fe2.subscription_id
                            AND pi.invoice_type = 'progressive_billing' AND pi.status <> 'voided'
                            AND pf.charge_id = fe2.charge_id AND pf.charge_filter_id IS NOT DISTINCT FROM fe2.charge_filter_id
                            AND coalesce(pf.grouped_by, '{}'::jsonb) = coalesce(fe2.grouped_by, '{}'::jsonb)
                            AND pf.from_datetime = fe2.from_datetime) AS amount
          FROM billing.fees fe2 WHERE fe2.customer_id = customer_id AND fe2.invoice_id = invoice_id AND fe2.fee_type = 'charge') billed
    WHERE fe.customer_id = customer_id AND fe.id = billed.id;
END $$;

REVOKE ALL ON FUNCTION billing.set_usage_thresholds(text, jsonb), billing._lifetime_usage(billing.subscriptions, billing.customers, timestamptz, timestamptz),
    billing._bill_usage_thresholds(billing.subscriptions, billing.customers, timestamptz),
    billing._credit_progressive_billing(bigint, bigint) FROM PUBLIC;

-- pg_dump keeps the rows (the tables belong to the extension).
SELECT pg_catalog.pg_extension_config_dump('billing.usage_thresholds', '');
SELECT pg_catalog.pg_extension_config_dump('billing.usage_thresholds_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.applied_usage_thresholds', '');

-- Credit notes (sql/credit_notes.sql).
-- Credit notes: corrections of a finalized invoice, per fee, with the taxes in proportion. A
-- credit note's total is refunded and/or credited; the credit is consumed by the customer's
-- later invoices at their finalization (after tax, before prepaid credits, oldest credit
-- first). Each tax of an invoice's credit notes is rounded on their running sum, so that
-- crediting every fee in full gives back exactly the invoice's taxes.
CREATE TYPE billing.credit_note_reason AS ENUM (
    'duplicated_charge', 'product_unsatisfactory', 'order_change', 'order_cancellation', 'fraudulent_charge', 'other'
);
CREATE TYPE billing.credit_status AS ENUM ('available', 'consumed', 'voided');

CREATE TABLE billing.credit_notes (
    id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id bigint NOT NULL,
    invoice_id bigint NOT NULL,
    -- The invoice's number, then -CN and the credit note's rank on it.
    number text NOT NULL,
    reason billing.credit_note_reason NOT NULL,
    description text,
    currency text NOT NULL,
    sub_total_excluding_taxes numeric NOT NULL,
    taxes_amount numeric NOT NULL,
    total_amount numeric NOT NULL,
    refund_amount numeric NOT NULL,
    credit_amount numeric NOT NULL,
    -- What is left of the credit for later invoices.
    balance_amount numeric NOT NULL,
    credit_status billing.credit_status NOT NULL,
    -- The base fee paid in advance whose unused days it gives back, after a termination or an
    -- upgrade (NULL: created by hand).
    unused_days_fee_id bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    voided_at timestamptz,
    PRIMARY KEY (customer_id, id),
    UNIQUE (customer_id, number),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES billing.invoices (customer_id, id),
    CHECK (total_amount = sub_total_excluding_taxes + taxes_amount AND total_amount = refund_amount + credit_amount),
    CHECK (refund_amount >= 0 AND credit_amount >= 0 AND balance_amount >= 0 AND balance_amount <= credit_amount)
);

-- What a credit note credits of each fee (before tax), and each tax it gives back.
CREATE TABLE billing.credit_note_items (
    customer_id bigint NOT NULL,
    credit_note_id bigint NOT NULL,
    fee_id bigint NOT NULL,
    amount numeric NOT NULL CHECK (amount > 0),
    PRIMARY KEY (customer_id, credit_note_id, fee_id),
    FOREIGN KEY (customer_id, credit_note_id) REFERENCES billing.credit_notes (customer_id, id),
    FOREIGN KEY (customer_id, fee_id) REFERENCES billing.fees (customer_id, id)
);
CREATE INDEX credit_note_items_by_fee ON billing.credit_note_items (customer_id, fee_id);

CREATE TABLE billing.credit_note_taxes (
    customer_id bigint NOT NULL,
    credit_note_id bigint NOT NULL,
    tax_id bigint NOT NULL REFERENCES billing.taxes,
    tax_code text NOT NULL,
    tax_rate numeric NOT NULL,
    base_amount numeric NOT NULL,
    -- The exact tax of the items, and the amount given back (rounded on the invoice's running sum).
    precise_amount numeric NOT NULL,
    amount numeric NOT NULL,
    PRIMARY KEY (customer_id, credit_note_id, tax_id),
    FOREIGN KEY (customer_id, credit_note_id) REFERENCES billing.credit_notes (customer_id, id)
);

-- The credit each later invoice consumed, per credit note.
CREATE TABLE billing.invoice_credit_notes (
    customer_id bigint NOT NULL,
    invoice_id bigint NOT NULL,
    credit_note_id bigint NOT NULL,
    amount numeric NOT NULL CHECK (amount > 0),
    PRIMARY KEY (customer_id, invoice_id, credit_note_id),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES billing.invoices (customer_id, id),
    FOREIGN KEY (customer_id, credit_note_id) REFERENCES billing.credit_notes (customer_id, id)
);

-- What is left creditable of each fee of an invoice (before tax): the rounded fee less its
-- progressive-billing credit and coupon share, rounded, less what credit notes took already.
CREATE FUNCTION billing._creditable(customer_id bigint, invoice_id bigint)
RETURNS TABLE (fee_id bigint, creditable numeric)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
BEGIN
    RETURN QUERY
    SELECT fe.id, billing.round_money(fe.amount - fe.progressive_credit_amount - fe.precise_coupons_amount, i.currency) - coalesce(sum(cni.amount), 0)
    FROM billing.fees fe
    JOIN billing.invoices i ON i.customer_id = fe.customer_id AND i.id = fe.invoice_id
    LEFT JOIN billing.credit_note_items cni ON cni.customer_id = fe.customer_id AND cni.fee_id = fe.id
    WHERE fe.customer_id = customer_id AND fe.invoice_id = invoice_id AND fe.invoiceable
    GROUP BY fe.id, fe.amount, fe.progressive_credit_amount, fe.precise_coupons_amount, i.currency;
END $$;

-- Credits a finalized invoice. items: [{"fee_id": ..., "amount": ...}], each amount before
-- tax, at most what is left creditable of the fee (23514). The taxes are credited in
-- proportion to the fee's exact taxes; refund + credit = the credit note's total (credit
-- defaults to what is not refunded; a refund needs a paid invoice). Numbered
-- <invoice number>-CN<n>.
CREATE FUNCTION billing.create_credit_note(
    invoice_id bigint, items jsonb, reason text, refund numeric DEFAULT 0, credit numeric DEFAULT NULL, description text DEFAULT NULL
) RETURNS billing.credit_notes
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    inv billing.invoices := billing._invoice(invoice_id);
    item jsonb;
    position integer := 0;
    fee_id bigint;
    amount numeric;
    left_to_credit numeric;
    note billing.credit_notes;
    rank integer;
    invoice_left numeric;
    sub_total numeric;
    taxes numeric;
    total numeric;
BEGIN
    PERFORM billing._require_status(inv, 'finalized', 'create_credit_note');
    PERFORM billing._check_label('credit note reason', reason, enum_range(NULL::billing.credit_note_reason)::text[]);
    IF jsonb_typeof(items) IS DISTINCT FROM 'array' OR jsonb_array_length(items) = 0 THEN
        PERFORM billing._invalid('items must be a non-empty JSON array of {"fee_id", "amount"}', format('got %s', items),
            'write [{"fee_id": 12, "amount": "10.00"}]');
    END IF;
    IF (SELECT count(DISTINCT i ->> 'fee_id') <> count(*) FROM jsonb_array_elements(items) i) THEN
        PERFORM billing._invalid('items name a fee twice', format('got %s', items), 'give one item per fee');
    END IF;
    IF refund IS NULL OR refund < 0 OR refund <> billing.round_money(refund, inv.currency)
       OR credit < 0 OR credit <> billing.round_money(credit, inv.currency) THEN
        PERFORM billing._invalid(format('refund and credit are amounts of 0 or more with the decimals of %s', inv.currency),
            format('got refund %s and credit %s', refund, credit), 'give the refund; the credit defaults to the rest');
    END IF;
    -- The invoice's row lock (billing._invoice) makes its credit notes take turns: the rank is
    -- free, and what is left creditable cannot change underneath.
    SELECT count(*) + 1 INTO rank FROM billing.credit_notes cn WHERE cn.customer_id = inv.customer_id AND cn.invoice_id = inv.id;
    INSERT INTO billing.credit_notes (customer_id, invoice_id, number, reason, description, currency, sub_total_excluding_taxes,
                                      taxes_amount, total_amount, refund_amount, credit_amount, balance_amount, credit_status)
    VALUES (inv.customer_id, inv.id, format('%s-CN%s', inv.number, rank), reason::billing.credit_note_reason, description,
            inv.currency, 0, 0, 0, 0, 0, 0, 'available')
    RETURNING * INTO note;
    FOR item IN SELECT value FROM jsonb_array_elements(items) LOOP
        position := position + 1;
        BEGIN
            fee_id := (item ->> 'fee_id')::bigint;
            amount := (item ->> 'amount')::numeric;
        EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
            fee_id := NULL;
        END;
        IF jsonb_typeof(item) IS DISTINCT FROM 'object' OR fee_id IS NULL OR NOT (amount > 0 AND amount < 'Infinity')
           OR amount <> billing.round_money(amount, inv.currency) THEN
            PERFORM billing._invalid(format('items[%s] needs a fee_id and a positive amount with the currency''s decimals', position),
                format('got %s', item), 'write {"fee_id": 12, "amount": "10.00"}');
        END IF;
        SELECT c.creditable INTO left_to_credit FROM billing._creditable(inv.customer_id, inv.id) c WHERE c.fee_id = fee_id;
        IF NOT FOUND THEN
            PERFORM billing._raise('23503', format('fee %s is not an invoiced fee of invoice %s', fee_id, inv.id),
                format('items[%s]', position), 'list the invoice''s fees with billing.invoice_document');
        END IF;
        IF amount > left_to_credit THEN
            PERFORM billing._raise('23514', format('items[%s] credits %s of fee %s, of which %s is left creditable', position,
                                                   amount, fee_id, left_to_credit),
                format('fee %s of invoice %s', fee_id, inv.id), 'credit at most what is left of the fee (before tax)');
        END IF;
        INSERT INTO billing.credit_note_items (customer_id, credit_note_id, fee_id, amount)
        VALUES (inv.customer_id, note.id, fee_id, amount);
    END LOOP;
    -- Each tax: the exact tax of the items (item × rate: in proportion to the fee's exact tax,
    -- its base × rate), rounded on the running sum of the invoice's credit notes.
    INSERT INTO billing.credit_note_taxes (customer_id, credit_note_id, tax_id, tax_code, tax_rate, base_amount, precise_amount, amount)
    SELECT inv.customer_id, note.id, t.tax_id, t.tax_code, t.tax_rate, t.base_amount, t.precise_amount,
           billing.round_money(t.precise_amount + coalesce(earlier.precise_amount, 0), inv.currency) - coalesce(earlier.amount, 0)
    FROM (SELECT ft.tax_id, ft.tax_code, ft.tax_rate, sum(cni.amount) AS base_amount,
                 sum(cni.amount * ft.tax_rate * 0.01) AS precise_amount
          FROM billing.credit_note_items cni
          JOIN billing.fee_taxes ft ON ft.customer_id = cni.customer_id AND ft.fee_id = cni.fee_id
          WHERE cni.customer_id = inv.customer_id AND cni.credit_note_id = note.id
          GROUP BY 1, 2, 3) t
    LEFT JOIN (SELECT cnt.tax_id, sum(cnt.precise_amount) AS precise_amount, sum(cnt.amount) AS amount
               FROM billing.credit_note_taxes cnt
               JOIN billing.credit_notes cn ON cn.customer_id = cnt.customer_id AND cn.id = cnt.credit_note_id
               WHERE cn.customer_id = inv.customer_id AND cn.invoice_id = inv.id AND cn.id <> note.id
               GROUP BY 1) earlier ON earlier.tax_id = t.tax_id;
    SELECT coalesce(sum(cni.amount), 0) INTO sub_total FROM billing.credit_note_items cni
    WHERE cni.customer_id = inv.customer_id AND cni.credit_note_id = note.id;
    -- However its fees add up (negative late usage, coupon shares rounded per fee), the
    -- invoice's credit notes never credit more than it billed before tax.
    SELECT inv.sub_total_excluding_taxes - coalesce(sum(cni.amount), 0) INTO invoice_left
    FROM billing.credit_note_items cni JOIN billing.credit_notes cn ON cn.customer_id = cni.customer_id AND cn.id = cni.credit_note_id
    WHERE cn.customer_id = inv.customer_id AND cn.invoice_id = inv.id AND cn.id <> note.id;
    IF sub_total > invoice_left THEN
        PERFORM billing._raise('23514', format('the items credit %s of invoice %s, of which %s is left creditable', sub_total, inv.id,
                                               greatest(invoice_left, 0)),
            format('invoice %s: %s before tax, less earlier credit notes', inv.id, inv.sub_total_excluding_taxes),
            'credit at most what is left of the invoice (before tax)');
    END IF;
    SELECT coalesce(sum(cnt.amount), 0) INTO taxes FROM billing.credit_note_taxes cnt
    WHERE cnt.customer_id = inv.customer_id AND cnt.credit_note_id = note.id;
    total := sub_total + taxes;
    IF refund > total OR (credit IS NOT NULL AND refund + credit <> total) THEN
        PERFORM billing._invalid(format('refund and credit must add up to the credit note''s total, %s', total),
            format('got refund %s and credit %s', refund, credit), 'give the refund; the credit defaults to the rest');
    END IF;
    IF refund > 0 AND inv.payment_status <> 'succeeded' THEN
        PERFORM billing._raise('55000', format('invoice %s is not paid: nothing to refund', inv.id),
            format('its payment status is %s', inv.payment_status), 'credit the amount instead, or record the payment first');
    END IF;
    UPDATE billing.credit_notes cn
    SET sub_total_excluding_taxes = sub_total, taxes_amount = taxes, total_amount = total, refund_amount = refund,
        credit_amount = total - refund, balance_amount = total - refund,
        credit_status = CASE WHEN total - refund > 0 THEN 'available'::billing.credit_status ELSE 'consumed' END
    WHERE cn.customer_id = inv.customer_id AND cn.id = note.id
    RETURNING * INTO note;
    PERFORM billing._emit(inv.customer_id, 'credit_note.created',
        jsonb_build_object('credit_note_id', note.id, 'number', note.number, 'invoice_id', inv.id, 'total_amount', note.total_amount,
                           'refund_amount', note.refund_amount, 'credit_amount', note.credit_amount, 'currency', note.currency));
    RETURN note;
END $$;

-- Gives up what is left of a credit note's credit: later invoices no longer consume it.
CREATE FUNCTION billing.void_credit_note(credit_note_id bigint) RETURNS billing.credit_notes
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    owner bigint;
    voided billing.credit_notes;
BEGIN
    SELECT cn.customer_id INTO owner FROM billing.credit_notes cn WHERE cn.id = credit_note_id;
    UPDATE billing.credit_notes cn SET balance_amount = 0, credit_status = 'voided', voided_at = now()
    WHERE cn.customer_id = owner AND cn.id = credit_note_id AND cn.credit_status = 'available'
    RETURNING * INTO voided;
    IF NOT FOUND THEN
        IF owner IS NULL THEN
            PERFORM billing._unknown('credit note', credit_note_id::text, 'list credit notes in billing_bi.credit_notes');
        END IF;
        PERFORM billing._raise('55000', format('credit note %s has no credit left to void', credit_note_id),
            'its credit is consumed or voided already', 'nothing to do');
    END IF;
    RETURN voided;
END $$;

-- The credit note for the unused days of a base fee paid in advance, when its plan ends
-- early: from first_unused_day (the day after a termination, the day of an upgrade) to the
-- period's end (plan amount / period days x days, pricing.md), less the fee's coupon share,
-- with its taxes, at most what is left creditable of the fee. `within` is an instant of the
-- plan's last period (the termination, or the instant before the change). Once per fee, and
-- only for a fee on a finalized invoice.
CREATE FUNCTION billing._credit_unused_days(
    sub billing.subscriptions, cust billing.customers, plan_version_id bigint, within timestamptz, first_unused_day date
) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    plan billing.plan_versions;
    fee billing.fees;
    period record;
    unused numeric;
    left_to_credit numeric;
    item numeric;
    note billing.credit_notes;
BEGIN
    SELECT * INTO plan FROM billing.plan_versions v WHERE v.id = plan_version_id;
    IF NOT plan.pay_in_advance THEN
        RETURN;
    END IF;
    -- The plan's own fee (a later plan's starts after `within`).
    SELECT fe.* INTO fee FROM billing.fees fe JOIN billing.invoices i ON i.customer_id = fe.customer_id AND i.id = fe.invoice_id
    WHERE fe.customer_id = sub.customer_id AND fe.subscription_id = sub.id AND fe.fee_type = 'subscription' AND fe.amount > 0
      AND fe.from_datetime <= within AND within <= fe.to_datetime AND i.status = 'finalized'
    ORDER BY fe.from_datetime DESC LIMIT 1;
    IF NOT FOUND OR EXISTS (SELECT 1 FROM billing.credit_notes cn WHERE cn.customer_id = sub.customer_id AND cn.unused_days_fee_id = fee.id) THEN
        RETURN;
    END IF;
    SELECT * INTO period FROM billing._period_dates(plan.interval::text, sub.billing_time::text,
        (coalesce(sub.started_at, sub.subscription_at) AT TIME ZONE cust.timezone)::date, (within AT TIME ZONE cust.timezone)::date);
    unused := billing._period_share(plan.amount, greatest(period.to_date - first_unused_day + 1, 0), period.to_date - period.from_date + 1);
    SELECT c.creditable INTO left_to_credit FROM billing._creditable(sub.customer_id, fee.invoice_id) c WHERE c.fee_id = fee.id;
    item := least(billing.round_money(unused * (1 - fee.precise_coupons_amount / fee.amount), cust.currency), left_to_credit);
    IF item <= 0 THEN
        RETURN;
    END IF;
    note := billing.create_credit_note(fee.invoice_id, jsonb_build_array(jsonb_build_object('fee_id', fee.id, 'amount', item)),
        CASE WHEN sub.terminated_at IS NOT NULL AND within = sub.terminated_at THEN 'order_cancellation' ELSE 'order_change' END::text,
        description => format('unused days from %s', first_unused_day));
    UPDATE billing.credit_notes cn SET unused_days_fee_id = fee.id WHERE cn.customer_id = note.customer_id AND cn.id = note.id;
END $$;

-- Consumes the customer's available credit notes (oldest first) on an invoice being
-- finalized, up to what its sub-total including taxes leaves. Returns whether any was used.
CREATE FUNCTION billing._apply_credit_notes(inv billing.invoices) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    note record;
    left_to_pay numeric;
    used numeric;
    applied_any boolean := false;
BEGIN
    PERFORM 1 FROM billing.credit_notes cn WHERE cn.customer_id = inv.customer_id AND cn.credit_status = 'available' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT i.sub_total_including_taxes INTO left_to_pay FROM billing.invoices i WHERE i.customer_id = inv.customer_id AND i.id = inv.id;
    FOR note IN
        SELECT cn.id, cn.balance_amount FROM billing.credit_notes cn
        WHERE cn.customer_id = inv.customer_id AND cn.credit_status = 'available' AND cn.currency = inv.currency
        ORDER BY cn.created_at, cn.id
    LOOP
        EXIT WHEN left_to_pay <= 0;
        used := least(note.balance_amount, left_to_pay);
        INSERT INTO billing.invoice_credit_notes (customer_id, invoice_id, credit_note_id, amount)
        VALUES (inv.customer_id, inv.id, note.id, used);
        UPDATE billing.credit_notes cn
        SET balance_amount = cn.balance_amount - used,
            credit_status = CASE WHEN cn.balance_amount = used THEN 'consumed'::billing.credit_status ELSE cn.credit_status END
        WHERE cn.customer_id = inv.customer_id AND cn.id = note.id;
        left_to_pay := left_to_pay - used;
        applied_any := true;
    END LOOP;
    RETURN applied_any;
END $$;

REVOKE ALL ON FUNCTION billing._creditable(bigint, bigint), billing.create_credit_note(bigint, jsonb, text, numeric, numeric, text),
    billing.void_credit_note(bigint), billing._apply_credit_notes(billing.invoices),
    billing._credit_unused_days(billing.subscriptions, billing.customers, bigint, timestamptz, date) FROM PUBLIC;

-- pg_dump keeps the rows (the tables belong to the extension).
SELECT pg_catalog.pg_extension_config_dump('billing.credit_notes', '');
SELECT pg_catalog.pg_extension_config_dump('billing.credit_notes_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.credit_note_items', '');
SELECT pg_catalog.pg_extension_config_dump('billing.credit_note_taxes', '');
SELECT pg_catalog.pg_extension_config_dump('billing.invoice_credit_notes', '');

-- Plan changes (sql/plan_changes.sql): ingestion splits a subscription's events by the
-- keys of every plan it is billed on.
ALTER TABLE billing.subscription_directory ADD COLUMN plan_version_ids bigint[];
UPDATE billing.subscription_directory SET plan_version_ids = ARRAY[plan_version_id];
ALTER TABLE billing.subscription_directory ALTER COLUMN plan_version_ids SET NOT NULL;

-- Plan changes. A subscription keeps its id, external id and events through a change of
-- plan; what changes is the plan version in force, from an instant on. Billing walks the
-- subscription's plans one after the other (billing._plan_segments): each is billed on its
-- own terms for the time it was in force, so usage is billed on the plan version in force
-- when it happened, and the periods keep the subscription's original anniversary.
CREATE TYPE billing.plan_change_kind AS ENUM ('upgrade', 'downgrade');

-- Each change: from `effective_at` on, the subscription is billed on `to_plan_version_id`.
-- A change whose instant has not come yet is pending (billing.cancel_plan_change removes it).
CREATE TABLE billing.plan_changes (
    customer_id bigint NOT NULL,
    subscription_id bigint NOT NULL,
    effective_at timestamptz NOT NULL,
    from_plan_version_id bigint NOT NULL REFERENCES billing.plan_versions,
    to_plan_version_id bigint NOT NULL REFERENCES billing.plan_versions,
    kind billing.plan_change_kind NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, subscription_id, effective_at),
    FOREIGN KEY (customer_id, subscription_id) REFERENCES billing.subscriptions (customer_id, id)
);

-- The plans of a subscription, oldest first: each version with the instant it took effect
-- and the instant the next one did (NULL for the last), pending ones included.
CREATE FUNCTION billing._plan_segments(sub billing.subscriptions)
RETURNS TABLE (plan_version_id bigint, from_at timestamptz, until_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    -- (Scalars: Citus plans no query with a whole row of a distributed table as a value.)
    customer_id bigint := sub.customer_id;
    subscription_id bigint := sub.id;
    instants timestamptz[];
    from_versions bigint[];
    to_versions bigint[];
BEGIN
    SELECT coalesce(array_agg(pc.effective_at ORDER BY pc.effective_at), '{}'),
           coalesce(array_agg(pc.from_plan_version_id ORDER BY pc.effective_at), '{}'),
           coalesce(array_agg(pc.to_plan_version_id ORDER BY pc.effective_at), '{}')
    INTO instants, from_versions, to_versions
    FROM billing.plan_changes pc WHERE pc.customer_id = customer_id AND pc.subscription_id = subscription_id;
    RETURN QUERY
    SELECT coalesce(from_versions[1], sub.plan_version_id), coalesce(sub.started_at, sub.subscription_at), instants[1]
    UNION ALL
    SELECT c.to_version, c.instant, instants[(c.n + 1)::integer]
    FROM unnest(instants, to_versions) WITH ORDINALITY c(instant, to_version, n);
END $$;

-- The subscription as billed at an instant: its row with the plan version in force then, and
-- the instant that plan took effect.
CREATE FUNCTION billing._in_force(sub billing.subscriptions, at timestamptz, OUT billed billing.subscriptions, OUT since timestamptz)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    segment record;
BEGIN
    billed := sub;
    SELECT * INTO segment FROM billing._plan_segments(sub) s WHERE s.from_at <= at ORDER BY s.from_at DESC LIMIT 1;
    IF FOUND THEN
        billed.plan_version_id := segment.plan_version_id;
        since := segment.from_at;
    ELSE
        since := coalesce(sub.started_at, sub.subscription_at);
    END IF;
END $$;

-- A plan's price over a year, which decides whether a change is an upgrade (pricing.md).
CREATE FUNCTION billing._yearly_amount(plan billing.plan_versions) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT plan.amount * CASE plan.interval WHEN 'weekly' THEN 52 WHEN 'monthly' THEN 12 WHEN 'quarterly' THEN 4
                                            WHEN 'semiannual' THEN 2 ELSE 1 END
$$;

-- Keeps the subscription row and the directory in step with the plan changes whose instant
-- has come by as_of: the subscription names the plan in force, and ingestion splits events
-- by the property keys of every plan the subscription has had or will have. Returns how
-- many subscriptions changed plan.
CREATE FUNCTION billing._apply_plan_changes(as_of timestamptz, only_customer_id bigint DEFAULT NULL, only_subscription_id bigint DEFAULT NULL)
RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    customers bigint[];
    subscriptions bigint[];
    versions bigint[];
    customer_id bigint;
    subscription_id bigint;
    version bigint;
    applied integer := 0;
BEGIN
    -- Never ahead of time: a pending change stays cancellable until its instant.
    as_of := least(as_of, now());
    -- What is due is read first and each subscription then updated by its key (on Citus, one
    -- statement per shard: a statement over every shard may not precede the directory's
    -- update in a transaction).
    IF only_customer_id IS NOT NULL THEN
        SELECT array_agg(d.customer_id), array_agg(d.subscription_id), array_agg(d.to_plan_version_id)
        INTO customers, subscriptions, versions
        FROM (SELECT pc.customer_id, pc.subscription_id, pc.to_plan_version_id FROM billing.plan_changes pc
              WHERE pc.customer_id = only_customer_id AND pc.subscription_id = only_subscription_id AND pc.effective_at <= as_of
              ORDER BY pc.effective_at DESC LIMIT 1) d;
    ELSE
        SELECT array_agg(d.customer_id), array_agg(d.subscription_id), array_agg(d.to_plan_version_id)
        INTO customers, subscriptions, versions
        FROM (SELECT DISTINCT ON (pc.customer_id, pc.subscription_id) pc.customer_id, pc.subscription_id, pc.to_plan_version_id
              FROM billing.plan_changes pc WHERE pc.effective_at <= as_of
              ORDER BY pc.customer_id, pc.subscription_id, pc.effective_at DESC) d;
    END IF;
    FOR n IN 1 .. coalesce(cardinality(customers), 0) LOOP
        -- (Scalars: an array element as a parameter of a statement on a distributed table
        -- crashes Citus 13.2's router planner.)
        customer_id := customers[n];
        subscription_id := subscriptions[n];
        version := versions[n];
        UPDATE billing.subscriptions s SET plan_version_id = version
        WHERE s.customer_id = customer_id AND s.id = subscription_id AND s.plan_version_id <> version;
        CONTINUE WHEN NOT FOUND;
        UPDATE billing.subscription_directory d SET plan_version_id = version
        WHERE d.customer_id = customer_id AND d.subscription_id = subscription_id;
        applied := applied + 1;
    END LOOP;
    RETURN applied;
END $$;

-- The directory's list of the plan versions ingestion splits a subscription's events for.
CREATE FUNCTION billing._note_plan_versions(sub billing.subscriptions) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    versions bigint[];
BEGIN
    versions := ARRAY(SELECT DISTINCT s.plan_version_id FROM billing._plan_segments(sub) s ORDER BY 1);
    UPDATE billing.subscription_directory d SET plan_version_ids = versions
    WHERE d.customer_id = sub.customer_id AND d.subscription_id = sub.id AND d.plan_version_ids <> versions;
END $$;

-- Moves a subscription to another plan (its current version). An upgrade (the new plan
-- costs at least as much per year) takes effect at `at`: the old plan is billed through the
-- day before, the new one from the change day, on one invoice (created at once when `at` has
-- come), and an old plan paid in advance gets a credit note for its unused days from the
-- change day on. A downgrade takes effect at the end of the current period and is pending
-- until then. A change replaces a pending one.
CREATE FUNCTION billing.change_plan(external_subscription_id text, plan text, at timestamptz DEFAULT now())
RETURNS billing.plan_changes
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    sub billing.subscriptions := billing._subscription(external_subscription_id);
    cust billing.customers;
    current_plan billing.plan_versions;
    new_plan billing.plan_versions;
    last_billed timestamptz;
    last_change timestamptz;
    period record;
    change billing.plan_changes;
BEGIN
    -- The directory row, then the subscription: the order billing.terminate_subscription locks them in.
    PERFORM 1 FROM billing.subscription_directory d WHERE d.external_id = external_subscription_id FOR UPDATE;
    SELECT * INTO sub FROM billing.subscriptions s WHERE s.customer_id = sub.customer_id AND s.id = sub.id FOR UPDATE;
    SELECT * INTO cust FROM billing.customers c WHERE c.id = sub.customer_id;
    new_plan := billing._plan_version(plan);
    IF at IS NULL OR NOT isfinite(at) THEN
        PERFORM billing._invalid('at must be an instant', format('got %s', at), 'give the instant of the change, or leave it to now()');
    END IF;
    IF sub.terminated_at <= at THEN
        PERFORM billing._raise('55000', format('subscription "%s" is terminated', external_subscription_id),
            format('terminated at %s', sub.terminated_at), 'create a new subscription on the plan');
    END IF;
    IF at < coalesce(sub.started_at, sub.subscription_at) THEN
        PERFORM billing._invalid('the plan change is before the subscription started',
            format('got %s, started %s', at, coalesce(sub.started_at, sub.subscription_at)), 'change the plan at or after the start');
    END IF;
    SELECT max(i.billing_at) INTO last_billed FROM billing.invoices i
    WHERE i.customer_id = sub.customer_id AND i.subscription_id = sub.id AND i.invoice_type = 'subscription';
    IF at <= last_billed THEN
        PERFORM billing._raise('55000', format('subscription "%s" is invoiced through %s', external_subscription_id, last_billed),
            format('got a plan change at %s', at), 'change the plan at a later instant; correct billed periods with a credit note');
    END IF;
    IF new_plan.currency <> cust.currency THEN
        PERFORM billing._invalid(format('plan "%s" is priced in %s, but customer "%s" is billed in %s', plan, new_plan.currency,
                                        cust.external_id, cust.currency),
            format('got plan %s', plan), format('change to a plan priced in %s', cust.currency));
    END IF;
    -- A change that has taken effect stays; pending ones give way to this one.
    SELECT max(pc.effective_at) INTO last_change FROM billing.plan_changes pc
    WHERE pc.customer_id = sub.customer_id AND pc.subscription_id = sub.id AND pc.effective_at <= now();
    IF at <= last_change THEN
        PERFORM billing._raise('55000', format('subscription "%s" changed plan at %s', external_subscription_id, last_change),
            format('got a plan change at %s', at), 'change the plan after the last change that took effect');
    END IF;
    DELETE FROM billing.plan_changes pc WHERE pc.customer_id = sub.customer_id AND pc.subscription_id = sub.id AND pc.effective_at >= at;
    SELECT * INTO current_plan FROM billing.plan_versions v WHERE v.id = ((billing._in_force(sub, at)).billed).plan_version_id;
    IF new_plan.id = current_plan.id THEN
        PERFORM billing._invalid(format('subscription "%s" is already on plan "%s"', external_subscription_id, plan),
            format('plan "%s" version %s is the plan in force at the change', plan, new_plan.version), 'name another plan');
    END IF;
    change := ROW(sub.customer_id, sub.id, at, current_plan.id, new_plan.id, 'upgrade'::billing.plan_change_kind, now());
    IF billing._yearly_amount(new_plan) < billing._yearly_amount(current_plan) THEN
        SELECT * INTO period FROM billing.period_bounds(current_plan.interval::text, sub.billing_time::text,
            (coalesce(sub.started_at, sub.subscription_at) AT TIME ZONE cust.timezone)::date, at, cust.timezone) pb;
        change.effective_at := period.to_datetime + interval '1 microsecond';
        change.kind := 'downgrade';
        IF sub.terminated_at <= change.effective_at THEN
            PERFORM billing._raise('55000', format('subscription "%s" ends before the downgrade would take effect', external_subscription_id),
                format('terminated at %s; the current period ends at %s', sub.terminated_at, period.to_datetime),
                'a downgrade takes effect at the end of the current period');
        END IF;
    END IF;
    INSERT INTO billing.plan_changes (customer_id, subscription_id, effective_at, from_plan_version_id, to_plan_version_id, kind, requested_at)
    VALUES (sub.customer_id, sub.id, change.effective_at, current_plan.id, new_plan.id, change.kind, change.requested_at);
    PERFORM billing._note_plan_versions(sub);
    PERFORM billing._emit(sub.customer_id, 'subscription.plan_changed',
        jsonb_build_object('subscription_external_id', sub.external_id, 'customer_external_id', cust.external_id,
                           'kind', change.kind, 'effective_at', change.effective_at,
                           'from_plan_code', (SELECT p.code FROM billing.plans p WHERE p.id = current_plan.plan_id), 'to_plan_code', plan));
    IF change.effective_at <= now() THEN
        PERFORM billing._apply_plan_changes(now(), sub.customer_id, sub.id);
        -- An upgrade that has happened is billed at once, up to its instant: the invoice
        -- with the old plan's last fees and the new plan's first fees paid in advance.
        IF change.kind = 'upgrade' THEN
            PERFORM billing._bill_subscription(sub.customer_id, sub.id, change.effective_at);
        END IF;
    END IF;
    RETURN change;
END $$;

-- Cancels a subscription's pending plan change (a scheduled downgrade, or an upgrade at a
-- later instant; the latest if there are several); returns it.
CREATE FUNCTION billing.cancel_plan_change(external_subscription_id text)
RETURNS billing.plan_changes
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    sub billing.subscriptions := billing._subscription(external_subscription_id);
    canceled billing.plan_changes;
    last_billed timestamptz;
BEGIN
    PERFORM 1 FROM billing.subscription_directory d WHERE d.external_id = external_subscription_id FOR UPDATE;
    PERFORM 1 FROM billing.subscriptions s WHERE s.customer_id = sub.customer_id AND s.id = sub.id FOR UPDATE;
    SELECT max(i.billing_at) INTO last_billed FROM billing.invoices i
    WHERE i.customer_id = sub.customer_id AND i.subscription_id = sub.id AND i.invoice_type = 'subscription';
    DELETE FROM billing.plan_changes pc
    WHERE pc.customer_id = sub.customer_id AND pc.subscription_id = sub.id
      AND pc.effective_at = (SELECT max(p.effective_at) FROM billing.plan_changes p
                             WHERE p.customer_id = sub.customer_id AND p.subscription_id = sub.id AND p.effective_at > now())
    RETURNING * INTO canceled;
    IF canceled.effective_at IS NULL THEN
        PERFORM billing._raise('55000', format('subscription "%s" has no pending plan change', external_subscription_id),
            'no change of its plan takes effect after now', 'list changes in billing_bi.plan_changes');
    END IF;
    -- A change billed ahead of time (billing as of a later instant) stands.
    IF canceled.effective_at <= last_billed THEN
        PERFORM billing._raise('55000', format('the pending plan change of subscription "%s" is invoiced already', external_subscription_id),
            format('it takes effect at %s; the subscription is invoiced through %s', canceled.effective_at, last_billed),
            'change the plan again after that instant');
    END IF;
    PERFORM billing._note_plan_versions(sub);
    RETURN canceled;
END $$;

REVOKE ALL ON FUNCTION billing._plan_segments(billing.subscriptions), billing._in_force(billing.subscriptions, timestamptz),
    billing._yearly_amount(billing.plan_versions), billing._apply_plan_changes(timestamptz, bigint, bigint),
    billing._note_plan_versions(billing.subscriptions), billing.change_plan(text, text, timestamptz),
    billing.cancel_plan_change(text) FROM PUBLIC;

-- pg_dump keeps the rows (the table belongs to the extension).
SELECT pg_catalog.pg_extension_config_dump('billing.plan_changes', '');

-- A base fee's key names its plan after a plan change.
DROP FUNCTION billing._add_base_fee(billing.subscriptions, billing.customers, bigint, billing.plan_versions, text, date, date, integer, timestamptz, timestamptz);
-- The base fee of a period (from_day to to_day) for `days` of its days, on an invoice, which
-- then names the base fee's period. period_key names the period (and the plan, after a
-- plan change) in the fee's key.
CREATE FUNCTION billing._add_base_fee(
    sub billing.subscriptions, cust billing.customers, invoice_id bigint, plan billing.plan_versions, plan_name text,
    from_day date, to_day date, days integer, from_datetime timestamptz, to_datetime timestamptz, period_key text
) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
BEGIN
    PERFORM billing._add_fee(sub, cust, invoice_id, 'subscription', 'subscription:' || period_key, plan_name,
        billing._period_share(plan.amount, days, to_day - from_day + 1), from_datetime, to_datetime);
    UPDATE billing.invoices i SET subscription_from = from_datetime, subscription_to = to_datetime
    WHERE i.customer_id = sub.customer_id AND i.id = invoice_id;
END $$;
-- The periods of one plan of a subscription, in force from `from_at` to `until_at` (the next
-- plan's instant; NULL: to the termination or for good), as billing._bill_periods bills them.
-- A plan that gives way to another is billed through the day before the change; its last
-- fees go on the invoice of the change's instant, with the next plan's first ones. The fees
-- of a plan after the first carry its instant in their keys.
CREATE FUNCTION billing._bill_plan_periods(
    sub billing.subscriptions, cust billing.customers, plan_version_id bigint, from_at timestamptz, until_at timestamptz,
    first_plan boolean, anchor date, last_billed timestamptz, as_of timestamptz, only_at timestamptz
) RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    plan billing.plan_versions;
    plan_name text;
    tz text := cust.timezone;
    starts timestamptz := from_at;
    -- The plan's last instant, and the instant its last fees are billed at.
    ends timestamptz := coalesce(until_at - interval '1 microsecond', sub.terminated_at, 'infinity');
    ends_at timestamptz := coalesce(until_at, sub.terminated_at, 'infinity');
    key_suffix text := CASE WHEN first_plan THEN '' ELSE '@' || to_char(from_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') END;
    billed_sub billing.subscriptions := sub;
    trial_end timestamptz;
    start_day date;
    paid_from_day date;
    last_day date;
    day date;
    p record;
    period_from timestamptz;
    period_to timestamptz;
    billed_from timestamptz;
    billed_to timestamptz;
    closes_at timestamptz;
    at timestamptz;
    invoice_id bigint;
    days integer;
    period_key text;
    committed numeric;
    missing numeric;
    advance_fixed_charges boolean;
    recurring_in_advance boolean;
    renews boolean;
BEGIN
    billed_sub.plan_version_id := plan_version_id;
    SELECT * INTO plan FROM billing.plan_versions v WHERE v.id = plan_version_id;
    SELECT pl.name INTO plan_name FROM billing.plans pl WHERE pl.id = plan.plan_id;
    -- The trial runs from the subscription's first start, whatever plan it is on now.
    trial_end := CASE WHEN plan.trial_days > 0 THEN coalesce(sub.started_at, sub.subscription_at) + plan.trial_days * interval '1 day' END;
    advance_fixed_charges := EXISTS (SELECT 1 FROM billing.fixed_charges fc WHERE fc.plan_version_id = plan.id AND fc.pay_in_advance);
    recurring_in_advance := EXISTS (SELECT 1 FROM billing.charges c JOIN billing.billable_metrics m ON m.id = c.billable_metric_id
                                    WHERE c.plan_version_id = plan.id AND c.pay_in_advance AND m.recurring);
    start_day := (starts AT TIME ZONE tz)::date;
    paid_from_day := greatest(start_day, (trial_end AT TIME ZONE tz)::date);
    -- Instants up to the last one billed are done: start from the period holding it.
    day := greatest(start_day, ((coalesce(only_at, last_billed) - interval '1 microsecond') AT TIME ZONE tz)::date);
    LOOP
        SELECT * INTO p FROM billing._period_dates(plan.interval::text, sub.billing_time::text, anchor, day);
        period_from := (p.from_date::timestamp AT TIME ZONE tz);
        period_to := ((p.to_date + 1)::timestamp AT TIME ZONE tz) - interval '1 microsecond';
        billed_from := greatest(period_from, starts);
        billed_to := least(period_to, ends);
        EXIT WHEN billed_from > as_of OR billed_from > billed_to;
        period_key := to_char(p.from_date, 'YYYY-MM-DD') || key_suffix;
        -- The last day the base fee and minimums count: through the day before a change.
        last_day := CASE WHEN until_at IS NOT NULL AND ends <= period_to THEN (until_at AT TIME ZONE tz)::date - 1
                         ELSE (billed_to AT TIME ZONE tz)::date END;

        -- In advance: the base fee and the fixed charges paid in advance when the period starts
        -- (or the plan, or the trial ends), for the days from then to the period's end.
        at := greatest(billed_from, trial_end);
        -- The units carried into a period by recurring charges paid in advance, at each period's
        -- start: a plan that starts within a period finds them billed for it by the plan before.
        renews := recurring_in_advance AND billed_from = period_from;
        IF ((plan.pay_in_advance AND plan.amount > 0) OR advance_fixed_charges
            OR (renews AND billing._bill_carried_in_advance(billed_sub, cust, NULL, billed_from, at, p.from_date, p.to_date, billed_to)))
           AND at <= period_to AND at < ends AND at <= as_of
           AND (only_at = at OR (only_at IS NULL AND at > coalesce(last_billed, '-infinity'))) THEN
            invoice_id := billing._invoice_at(sub, cust, at);
            RETURN NEXT invoice_id;
            IF plan.pay_in_advance AND plan.amount > 0 THEN
                PERFORM billing._add_base_fee(billed_sub, cust, invoice_id, plan, plan_name, p.from_date, p.to_date,
                                              p.to_date - greatest(p.from_date, paid_from_day) + 1, greatest(period_from, at), period_to,
                                              period_key);
            END IF;
            PERFORM billing._add_fixed_charge_fees(billed_sub, cust, invoice_id, true, p.from_date, p.to_date, greatest(period_from, at),
                                                   period_to, period_key);
            -- Recurring charges paid in advance: the units carried into the period.
            IF renews THEN
                PERFORM billing._bill_carried_in_advance(billed_sub, cust, invoice_id, billed_from, at, p.from_date, p.to_date, billed_to);
            END IF;
        END IF;

        -- At the period's close (or the plan's end): arrears base fee, usage, minimums.
        closes_at := CASE WHEN ends <= period_to THEN ends_at ELSE period_to + interval '1 microsecond' END;
        EXIT WHEN closes_at > as_of;
        IF only_at = closes_at OR (only_at IS NULL AND closes_at > coalesce(last_billed, '-infinity')) THEN
            invoice_id := billing._invoice_at(sub, cust, closes_at);
            RETURN NEXT invoice_id;
            days := last_day - greatest(p.from_date, paid_from_day) + 1;
            IF NOT plan.pay_in_advance AND plan.amount > 0 AND days > 0 THEN
                PERFORM billing._add_base_fee(billed_sub, cust, invoice_id, plan, plan_name, p.from_date, p.to_date, days, billed_from,
                                              billed_to, period_key);
            END IF;
            -- Fixed charges in arrears, from the trial's end.
            IF days > 0 THEN
                PERFORM billing._add_fixed_charge_fees(billed_sub, cust, invoice_id, false, p.from_date, p.to_date,
                                                       greatest(billed_from, coalesce(trial_end, billed_from)),
                                                       least(billed_to, ((last_day + 1)::timestamp AT TIME ZONE tz) - interval '1 microsecond'),
                                                       period_key);
            END IF;
            days := last_day - greatest(p.from_date, start_day) + 1;
            PERFORM billing._add_usage_fees(billed_sub, cust, invoice_id, billed_from, billed_to, days, p.to_date - p.from_date + 1);
            UPDATE billing.invoices i SET charges_from = billed_from, charges_to = billed_to
            WHERE i.customer_id = sub.customer_id AND i.id = invoice_id;
            -- The plan's minimum commitment, against every fee of the period wherever it was
            -- billed (an in-advance base fee is on an earlier invoice).
            IF plan.minimum_commitment IS NOT NULL THEN
                SELECT coalesce(sum(fe.amount), 0) INTO committed FROM billing.fees fe
                JOIN billing.invoices i ON i.customer_id = fe.customer_id AND i.id = fe.invoice_id AND i.status <> 'voided'
                WHERE fe.customer_id = sub.customer_id AND fe.subscription_id = sub.id AND fe.invoiceable
                  AND (fe.fee_key = 'subscription:' || period_key OR fe.fee_key LIKE 'fixed\_charge:%:' || period_key
                       OR (fe.invoice_id = invoice_id AND fe.fee_type IN ('charge', 'charge_minimum') AND fe.from_datetime = billed_from)
                       OR (fe.fee_key LIKE 'in\_advance:%' AND fe.from_datetime = billed_from));
                missing := billing._shortfall(
                    billing.round_money(billing._period_share(plan.minimum_commitment, days, p.to_date - p.from_date + 1), cust.currency),
                    committed);
                IF missing > 0 THEN
                    PERFORM billing._add_fee(billed_sub, cust, invoice_id, 'commitment', 'commitment:' || period_key,
                                             plan_name || ' (minimum commitment)', missing, billed_from, billed_to);
                END IF;
            END IF;
        END IF;
        EXIT WHEN ends <= period_to;
        day := p.to_date + 1;
    END LOOP;
END $$;
-- The credit notes for the unused days of plans paid in advance that ended early by as_of:
-- the plans left by upgrades (their instants and plans given) and a termination.
CREATE FUNCTION billing._credit_ended_plans(
    sub billing.subscriptions, cust billing.customers, upgrades timestamptz[], upgraded_from bigint[], as_of timestamptz
) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
BEGIN
    FOR n IN 1 .. cardinality(upgrades) LOOP
        CONTINUE WHEN upgrades[n] > as_of;
        PERFORM billing._credit_unused_days(sub, cust, upgraded_from[n], upgrades[n] - interval '1 microsecond',
                                            (upgrades[n] AT TIME ZONE cust.timezone)::date);
    END LOOP;
    IF sub.status = 'terminated' AND sub.terminated_at <= as_of THEN
        PERFORM billing._credit_unused_days(sub, cust, ((billing._in_force(sub, sub.terminated_at)).billed).plan_version_id,
                                            sub.terminated_at, (sub.terminated_at AT TIME ZONE cust.timezone)::date + 1);
    END IF;
END $$;
REVOKE ALL ON FUNCTION billing._add_base_fee(billing.subscriptions, billing.customers, bigint, billing.plan_versions, text, date, date, integer, timestamptz, timestamptz, text),
    billing._bill_plan_periods(billing.subscriptions, billing.customers, bigint, timestamptz, timestamptz, boolean, date, timestamptz, timestamptz, timestamptz),
    billing._credit_ended_plans(billing.subscriptions, billing.customers, timestamptz[], bigint[], timestamptz) FROM PUBLIC;
-- Usage of the open billing period on the plan in force (from the later of the period
-- start and the plan's start, to the earlier of the period end and the termination); for a
-- terminated subscription, its last period.
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
    in_force record;
BEGIN
    sub := billing._subscription(external_subscription_id);
    SELECT * INTO cust FROM billing.customers c WHERE c.id = sub.customer_id;
    ends := coalesce(sub.terminated_at, 'infinity');
    SELECT * INTO in_force FROM billing._in_force(sub, least(now(), ends));
    sub := in_force.billed;
    starts := in_force.since;
    SELECT * INTO bounds FROM billing.period_bounds(
        (SELECT v.interval::text FROM billing.plan_versions v WHERE v.id = sub.plan_version_id), sub.billing_time::text,
        (coalesce(sub.started_at, sub.subscription_at) AT TIME ZONE cust.timezone)::date, least(now(), ends), cust.timezone) pb;
    RETURN QUERY SELECT * FROM billing._usage(sub, cust, greatest(bounds.from_datetime, starts), least(bounds.to_datetime, ends));
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

CREATE OR REPLACE FUNCTION billing.terminate_subscription(external_id text, terminated_at timestamptz DEFAULT now())
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

-- Pending subscriptions whose start has come become active, and plan changes whose instant
-- has come take effect (the billing cycle calls this; pg_cron can too). Ingestion already
-- accepts their events from subscription_at on; billing already bills each plan for its time.
-- (PL/pgSQL: Citus plans no SQL-language function that reads a distributed table with
-- parameters.)
CREATE OR REPLACE FUNCTION billing.activate_subscriptions(as_of timestamptz DEFAULT now()) RETURNS integer
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

-- Charges paid in advance (sql/pay_in_advance.sql), billed on invoices of their own.
ALTER TYPE billing.invoice_type ADD VALUE 'pay_in_advance';

-- Charges paid in advance: each event of such a charge is billed when it is ingested, in the
-- ingesting transaction. A charge's usage in a period keeps a high-water mark: an event
-- bills price(high-water mark after it) - price(high-water mark before it), so usage that
-- goes down and up again is not billed twice, and a decrease is never refunded within the
-- period (pricing.md, Pay in advance). The fees of a subscription's ingestion day go on one
-- draft invoice of type pay_in_advance, billed at the end of that day (customer-local) and
-- finalized by the billing run like any draft; the period's invoice does not bill these
-- charges again.

-- Per charge, filter, pricing group and period of a subscription: the usage so far and the
-- high-water mark billed. The row lock orders concurrent events of one line.
CREATE TABLE billing.in_advance_usage (
    customer_id bigint NOT NULL,
    subscription_id bigint NOT NULL,
    charge_id bigint NOT NULL,
    -- The charge filter the events fall into; 0 for the charge's default bucket.
    charge_filter_id bigint NOT NULL,
    grouped_by jsonb NOT NULL,
    period_from timestamptz NOT NULL,
    units numeric NOT NULL,
    billed_units numeric NOT NULL,
    events_count bigint NOT NULL,
    billed_amount numeric NOT NULL,
    -- What the latest event raised the mark by, and billed.
    last_units numeric NOT NULL,
    last_amount numeric NOT NULL,
    -- For the charge models priced per event (percentage, dynamic): the values billed so far,
    -- in the order they were billed; NULL for the others.
    billed_values numeric[],
    PRIMARY KEY (customer_id, subscription_id, charge_id, charge_filter_id, grouped_by, period_from)
);

-- The charges billed at ingestion: count, sum and unique_count metrics; priced on units (not
-- per event) when recurring or unique_count.
CREATE FUNCTION billing._check_pay_in_advance(charge_index integer, metric billing.billable_metrics, model text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
#variable_conflict use_variable
BEGIN
    IF metric.aggregation NOT IN ('count', 'sum', 'unique_count') THEN
        PERFORM billing._invalid(format('charges[%s] cannot be paid in advance: metric "%s" is a %s%s metric', charge_index, metric.code,
                                        CASE WHEN metric.recurring THEN 'recurring ' ELSE '' END, metric.aggregation),
            format('got "pay_in_advance": true for metric "%s"', metric.code),
            'charges paid in advance bill count, sum and unique_count metrics; bill this one in arrears');
    ELSIF (metric.recurring OR metric.aggregation = 'unique_count') AND model IN ('percentage', 'dynamic') THEN
        PERFORM billing._invalid(format('charges[%s] cannot be paid in advance with charge_model %s on the %s metric "%s"',
                                        charge_index, model, CASE WHEN metric.recurring THEN 'recurring' ELSE metric.aggregation::text END,
                                        metric.code),
            format('got "pay_in_advance": true, charge_model %s and a %s metric', model,
                   CASE WHEN metric.recurring THEN 'recurring' ELSE metric.aggregation::text END),
            'such a charge paid in advance is priced on its units: use standard, graduated, graduated_percentage, package or volume');
    END IF;
END $$;

-- The subscription's draft invoice of pay-in-advance fees for the day of now() (customer-local),
-- locked: billed at the end of that day, created if it is not there yet. If the day's invoice
-- was finalized already (by hand, or by a run as of a later instant), the fees of the rest
-- of the day go on one invoice of that instant.
CREATE FUNCTION billing._in_advance_invoice(sub billing.subscriptions, cust billing.customers, OUT invoice billing.invoices, OUT created boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    day_end timestamptz := (((now() AT TIME ZONE cust.timezone)::date + 1)::timestamp AT TIME ZONE cust.timezone);
    at timestamptz := day_end;
BEGIN
    created := false;
    FOR attempt IN 1 .. 3 LOOP
        SELECT * INTO invoice FROM billing.invoices i
        WHERE i.customer_id = sub.customer_id AND i.subscription_id = sub.id AND i.invoice_type = 'pay_in_advance' AND i.status = 'draft'
          AND i.billing_at > day_end - interval '1 day' AND i.billing_at <= day_end
        ORDER BY i.billing_at DESC LIMIT 1
        FOR UPDATE;
        IF invoice.id IS NOT NULL THEN
            RETURN;
        END IF;
        IF EXISTS (SELECT 1 FROM billing.invoices i WHERE i.customer_id = sub.customer_id AND i.subscription_id = sub.id
                   AND i.invoice_type = 'pay_in_advance' AND i.billing_at = day_end) THEN
            at := now();
        END IF;
        INSERT INTO billing.invoices (customer_id, subscription_id, billing_entity_id, invoice_type, currency, timezone, billing_at, issuing_date)
        VALUES (sub.customer_id, sub.id, cust.billing_entity_id, 'pay_in_advance', cust.currency, cust.timezone, at,
                (day_end AT TIME ZONE cust.timezone)::date)
        ON CONFLICT ON CONSTRAINT invoices_billing_key DO NOTHING
        RETURNING * INTO invoice;
        IF invoice.id IS NOT NULL THEN
            created := true;
            RETURN;
        END IF;
        -- Created by a concurrent ingestion: take it, locked.
    END LOOP;
    PERFORM billing._raise('40001', 'the day''s pay_in_advance invoice changed under this ingestion',
                           format('subscription %s', sub.external_id), 'retry the transaction');
END $$;

-- What raising a line's mark from `before` to `after` bills, each mark rounded as the metric
-- rounds units: price(after) - price(before), or price(after) for the line's first event
-- (with the price of 0 units: a first tier's flat fee); a price that falls as units grow
-- (volume tiers) bills nothing, never a refund. SQL, to be inlined into the line's upsert.
CREATE FUNCTION billing._price_rise(
    price billing.price, rounding_function text, rounding_precision integer, before numeric, after numeric, first boolean
) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT greatest(billing.amount(price, billing._round_units(after, rounding_function, rounding_precision))
                    - CASE WHEN first THEN 0
                           ELSE billing.amount(price, billing._round_units(before, rounding_function, rounding_precision)) END, 0)
$$;

-- By how many units, rounded as the metric rounds them, a line's mark rose.
CREATE FUNCTION billing._units_rise(rounding_function text, rounding_precision integer, before numeric, after numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT trim_scale(billing._round_units(after, rounding_function, rounding_precision)
                      - billing._round_units(before, rounding_function, rounding_precision))
$$;

-- A charge's units per filter and pricing group in [from_ts, to_ts], as billing._metric_units
-- counts them (a recurring metric from its beginning): with to_ts the instant before
-- from_ts, a recurring charge's units carried into from_ts.
CREATE FUNCTION billing._bucket_units(sub billing.subscriptions, cust billing.customers, charge_id bigint, from_ts timestamptz, to_ts timestamptz)
RETURNS TABLE (filter_id bigint, grouped_by jsonb, units numeric)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    ch billing.charges;
    metric billing.billable_metrics;
    filtered boolean;
    dims_list jsonb[];
    units_list numeric[];
BEGIN
    SELECT * INTO ch FROM billing.charges c WHERE c.id = charge_id;
    SELECT * INTO metric FROM billing.billable_metrics m WHERE m.id = ch.billable_metric_id;
    filtered := EXISTS (SELECT 1 FROM billing.charge_filters cf WHERE cf.charge_id = ch.id);
    -- (Read apart from the grouping below: on Citus a query may not both read a distributed
    -- table and call a function that reads one.)
    SELECT array_agg(x.dims), array_agg(x.units) INTO dims_list, units_list
    FROM billing._metric_units(sub.customer_id, sub.id, metric, from_ts, to_ts, cust.timezone) x;
    RETURN QUERY
    SELECT CASE WHEN filtered THEN billing._charge_filter(ch.id, u.dims) END, g.grouped_by, sum(u.units)
    FROM unnest(dims_list, units_list) u(dims, units)
    CROSS JOIN LATERAL billing._group_of(ch.pricing_group_keys, u.dims) g
    GROUP BY 1, 2;
END $$;

-- At the start of a period, the recurring charges paid in advance (invoiceable ones) bill the
-- units carried in: their price for the period (for the days from `at`, a trial's end, to its
-- end when prorated), on the invoice of that instant; each line of the period starts from
-- those units, so that its events bill only what they add. Returns whether there was
-- anything to bill (with invoice_id NULL, only says so).
CREATE FUNCTION billing._bill_carried_in_advance(
    sub billing.subscriptions, cust billing.customers, invoice_id bigint, window_from timestamptz, at timestamptz,
    from_day date, to_day date, period_to timestamptz
) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    ch record;
    carried record;
    filter billing.charge_filters;
    units numeric;
    amount numeric;
    billed boolean := false;
BEGIN
    FOR ch IN
        SELECT c.id, c.price, c.prorated, c.invoiceable, m.code AS metric_code, m.name, m.rounding_function::text AS rounding_function,
               m.rounding_precision
        FROM billing.charges c JOIN billing.billable_metrics m ON m.id = c.billable_metric_id
        WHERE c.plan_version_id = sub.plan_version_id AND c.pay_in_advance AND m.recurring AND c.invoiceable
        ORDER BY c.position
    LOOP
        FOR carried IN
            SELECT * FROM billing._bucket_units(sub, cust, ch.id, window_from, window_from - interval '1 microsecond') c WHERE c.units > 0
        LOOP
            billed := true;
            CONTINUE WHEN invoice_id IS NULL;
            filter := NULL;
            SELECT * INTO filter FROM billing.charge_filters cf WHERE cf.id = carried.filter_id;
            units := billing._units_rise(ch.rounding_function, ch.rounding_precision, 0, carried.units);
            amount := billing._price_rise(coalesce(filter.price, ch.price)::billing.price, ch.rounding_function, ch.rounding_precision,
                                          0, carried.units, true)
                      * CASE WHEN ch.prorated THEN (to_day - (at AT TIME ZONE cust.timezone)::date + 1)::numeric / (to_day - from_day + 1)
                             ELSE 1 END;
            INSERT INTO billing.in_advance_usage (customer_id, subscription_id, charge_id, charge_filter_id, grouped_by, period_from,
                                                  units, billed_units, events_count, billed_amount, last_units, last_amount)
            VALUES (sub.customer_id, sub.id, ch.id, coalesce(carried.filter_id, 0), carried.grouped_by, window_from,
                    carried.units, carried.units, 0, 0, 0, 0)
            ON CONFLICT ON CONSTRAINT in_advance_usage_pkey DO NOTHING;
            INSERT INTO billing.fees (customer_id, invoice_id, subscription_id, fee_type, fee_key, charge_id, charge_filter_id,
                                      billable_metric_code, charge_model, filter_values, grouped_by, description, units, events_count,
                                      precise_unit_amount, precise_amount, amount, invoiceable, from_datetime, to_datetime)
            VALUES (sub.customer_id, invoice_id, sub.id, 'charge',
                    billing._usage_fee_key('in_advance', ch.id, carried.filter_id, carried.grouped_by, window_from, at),
                    ch.id, carried.filter_id, ch.metric_code, ch.price ->> 'charge_model', filter."values", nullif(carried.grouped_by, '{}'::jsonb),
                    coalesce(filter.invoice_display_name, ch.name), units, 0, coalesce(amount / nullif(units, 0), 0),
                    amount, billing.round_money(amount, cust.currency), true, window_from, period_to);
        END LOOP;
    END LOOP;
    RETURN billed;
END $$;

-- Bills the pay-in-advance charges of events just stored (one array element per event, in
-- ingestion order: their customer, subscription, metric, instant, value and dimensions),
-- called by ingestion when a batch holds events of such charges. Subscriptions in key order,
-- each one's day invoice locked before its usage lines, so that concurrent ingestions wait on
-- each other instead of deadlocking.
CREATE FUNCTION billing._bill_in_advance(
    customer_ids bigint[], subscription_ids bigint[], metric_ids bigint[], instants timestamptz[], event_values numeric[], dims jsonb[],
    plan_version_ids bigint[], amounts_cents numeric[]
) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    ev record;
    sub billing.subscriptions;
    cust billing.customers;
    day_invoice record;
    invoice billing.invoices;
    invoices bigint[] := '{}';
    customers bigint[] := '{}';
    announce bigint[] := '{}';
    in_force record;
    plan billing.plan_versions;
    since timestamptz;
    ch record;
    filter billing.charge_filters;
    line_price billing.price;
    period record;
    window_from timestamptz;
    period_to timestamptz;
    grouped jsonb;
    line billing.in_advance_usage;
    delta numeric;
    priced numeric;
    carried numeric;
    share numeric;
    members numeric;
    high_water numeric;
    fee numeric;
    burning boolean;
    burned numeric;
    short_subscriptions bigint[] := '{}';
    shorts numeric[] := '{}';
    burned_customers bigint[] := '{}';
    entry record;
BEGIN
    FOR ev IN
        SELECT e.* FROM unnest(customer_ids, subscription_ids, metric_ids, instants, event_values, dims, plan_version_ids, amounts_cents)
                        WITH ORDINALITY AS e(customer_id, subscription_id, metric_id, at, value, dims, plan_version_id, amount_cents, n)
        ORDER BY e.customer_id, e.subscription_id, e.n
    LOOP
        IF sub.id IS DISTINCT FROM ev.subscription_id OR sub.customer_id IS DISTINCT FROM ev.customer_id THEN
            SELECT * INTO sub FROM billing.subscriptions s WHERE s.customer_id = ev.customer_id AND s.id = ev.subscription_id;
            SELECT * INTO cust FROM billing.customers c WHERE c.id = ev.customer_id;
            invoice := NULL;
            burning := EXISTS (SELECT 1 FROM billing.wallets wl WHERE wl.customer_id = ev.customer_id AND wl.burn_down AND wl.status = 'active');
        END IF;
        -- The plan in force at the event: the subscription's only plan, as ingestion knows
        -- it, or, after plan changes, the one of the event's instant.
        IF ev.plan_version_id IS NOT NULL THEN
            since := coalesce(sub.started_at, sub.subscription_at);
        ELSE
            in_force := billing._in_force(sub, ev.at);
            ev.plan_version_id := (in_force.billed).plan_version_id;
            since := in_force.since;
        END IF;
        IF plan.id IS DISTINCT FROM ev.plan_version_id THEN
            SELECT * INTO plan FROM billing.plan_versions v WHERE v.id = ev.plan_version_id;
        END IF;
        period := billing._period_dates(plan.interval::text, sub.billing_time::text,
                                        (coalesce(sub.started_at, sub.subscription_at) AT TIME ZONE cust.timezone)::date,
                                        (ev.at AT TIME ZONE cust.timezone)::date);
        window_from := greatest(period.from_date::timestamp AT TIME ZONE cust.timezone, since);
        period_to := least(((period.to_date + 1)::timestamp AT TIME ZONE cust.timezone) - interval '1 microsecond',
                           coalesce(sub.terminated_at, 'infinity'));
        FOR ch IN
            SELECT c.id, c.price::billing.price AS price, c.price ->> 'charge_model' AS model, c.pricing_group_keys, c.invoiceable,
                   m.recurring, c.prorated, m.aggregation::text AS aggregation, m.id AS metric_id,
                   m.code AS metric_code, m.name, m.rounding_function::text AS rounding_function, m.rounding_precision,
                   EXISTS (SELECT 1 FROM billing.charge_filters cf WHERE cf.charge_id = c.id) AS filtered, c.pay_in_advance AS in_advance
            FROM billing.charges c JOIN billing.billable_metrics m ON m.id = c.billable_metric_id
            WHERE c.plan_version_id = plan.id AND c.billable_metric_id = ev.metric_id
              -- Charges paid in advance; with a wallet burned down in real time, the usage
              -- charges billed in arrears whose price an event raises at once (count, sum and
              -- unique_count metrics that reset every period, not prorated).
              AND (c.pay_in_advance OR (burning AND c.invoiceable AND NOT c.prorated AND NOT m.recurring
                                        AND m.aggregation IN ('count', 'sum', 'unique_count')))
            ORDER BY c.position
        LOOP
            -- Burn-down takes the price of the open period's usage; a late event of an
            -- earlier period is billed with that period's adjustments.
            CONTINUE WHEN NOT ch.in_advance AND period_to < now();
            -- The day's invoice, locked before the line (the order every ingestion takes them in).
            IF invoice.id IS NULL AND ch.invoiceable AND ch.in_advance THEN
                day_invoice := billing._in_advance_invoice(sub, cust);
                invoice := day_invoice.invoice;
                invoices := invoices || invoice.id;
                customers := customers || sub.customer_id;
                IF day_invoice.created THEN
                    announce := announce || invoice.id;
                END IF;
            END IF;
            filter := NULL;
            line_price := ch.price;
            IF ch.filtered THEN
                SELECT * INTO filter FROM billing.charge_filters cf WHERE cf.id = billing._charge_filter(ch.id, coalesce(ev.dims, '{}'));
                line_price := coalesce(filter.price::billing.price, line_price);
            END IF;
            grouped := CASE WHEN cardinality(ch.pricing_group_keys) = 0 THEN '{}'::jsonb
                            ELSE (SELECT g.grouped_by FROM billing._group_of(ch.pricing_group_keys, coalesce(ev.dims, '{}')) g) END;
            delta := coalesce(ev.value, 1);
            -- A recurring line starts from the units carried into the period (their price is
            -- billed at the period's start, billing._bill_plan_periods); a prorated one bills
            -- an increase for the days from the event's to the period's end.
            carried := 0;
            IF ch.recurring AND NOT EXISTS (
                SELECT 1 FROM billing.in_advance_usage u
                WHERE u.customer_id = sub.customer_id AND u.subscription_id = sub.id AND u.charge_id = ch.id
                  AND u.charge_filter_id = coalesce(filter.id, 0) AND u.grouped_by = grouped AND u.period_from = window_from) THEN
                SELECT coalesce(sum(c.units), 0) INTO carried
                FROM billing._bucket_units(sub, cust, ch.id, window_from, window_from - interval '1 microsecond') c
                WHERE c.filter_id IS NOT DISTINCT FROM filter.id AND c.grouped_by = grouped;
            END IF;
            share := CASE WHEN ch.prorated
                          THEN (period.to_date - (ev.at AT TIME ZONE cust.timezone)::date + 1)::numeric / (period.to_date - period.from_date + 1)
                          ELSE 1 END;
            IF ch.aggregation = 'unique_count' THEN
                -- Members added and removed: the line is locked first, then its members at the
                -- event's instant counted from the events (which then include every committed
                -- event of the line), and the mark raised to them.
                INSERT INTO billing.in_advance_usage AS u (customer_id, subscription_id, charge_id, charge_filter_id, grouped_by, period_from,
                                                          units, billed_units, events_count, billed_amount, last_units, last_amount)
                VALUES (sub.customer_id, sub.id, ch.id, coalesce(filter.id, 0), grouped, window_from, carried, carried, 0, 0, 0, 0)
                ON CONFLICT ON CONSTRAINT in_advance_usage_pkey DO NOTHING;
                SELECT * INTO line FROM billing.in_advance_usage u
                WHERE u.customer_id = sub.customer_id AND u.subscription_id = sub.id AND u.charge_id = ch.id
                  AND u.charge_filter_id = coalesce(filter.id, 0) AND u.grouped_by = grouped AND u.period_from = window_from
                FOR UPDATE;
                SELECT coalesce(sum(c.units), 0) INTO members FROM billing._bucket_units(sub, cust, ch.id, window_from, ev.at) c
                WHERE c.filter_id IS NOT DISTINCT FROM filter.id AND c.grouped_by = grouped;
                high_water := greatest(line.billed_units, members);
                fee := billing._price_rise(line_price, ch.rounding_function, ch.rounding_precision, line.billed_units, high_water,
                                           line.events_count = 0 AND line.billed_units = 0) * share;
                UPDATE billing.in_advance_usage u
                SET units = members, billed_units = high_water, events_count = u.events_count + 1, billed_amount = u.billed_amount + fee,
                    last_units = billing._units_rise(ch.rounding_function, ch.rounding_precision, line.billed_units, high_water),
                    last_amount = fee
                WHERE u.customer_id = sub.customer_id AND u.subscription_id = sub.id AND u.charge_id = ch.id
                  AND u.charge_filter_id = coalesce(filter.id, 0) AND u.grouped_by = grouped AND u.period_from = window_from
                RETURNING u.* INTO line;
            ELSIF ch.model IN ('percentage', 'dynamic') THEN
                -- Priced per event: the amount of the line's values so far (this one included)
                -- less what the line billed, which is the highest such amount: a total that goes
                -- down and up again is not billed twice.
                priced := CASE ch.model WHEN 'dynamic' THEN coalesce(ev.amount_cents, 0) ELSE delta END;
                INSERT INTO billing.in_advance_usage AS u (customer_id, subscription_id, charge_id, charge_filter_id, grouped_by, period_from,
                                                          units, billed_units, events_count, billed_amount, last_units, last_amount,
                                                          billed_values)
                VALUES (sub.customer_id, sub.id, ch.id, coalesce(filter.id, 0), grouped, window_from, delta, delta, 1,
                        greatest(billing.amount(line_price, ARRAY[priced], cust.currency), 0), delta,
                        greatest(billing.amount(line_price, ARRAY[priced], cust.currency), 0), ARRAY[priced])
                ON CONFLICT ON CONSTRAINT in_advance_usage_pkey DO UPDATE
                SET units = u.units + excluded.units, billed_units = u.units + excluded.units, events_count = u.events_count + 1,
                    last_units = excluded.units,
                    last_amount = greatest(billing.amount(line_price, u.billed_values || excluded.billed_values, cust.currency)
                                           - u.billed_amount, 0),
                    billed_amount = greatest(u.billed_amount,
                                             billing.amount(line_price, u.billed_values || excluded.billed_values, cust.currency)),
                    billed_values = u.billed_values || excluded.billed_values
                RETURNING u.* INTO line;
            ELSE
                -- The line's new mark and what it bills, in one statement that waits for (and then
                -- sees) a concurrent event of the line.
                INSERT INTO billing.in_advance_usage AS u (customer_id, subscription_id, charge_id, charge_filter_id, grouped_by, period_from,
                                                          units, billed_units, events_count, billed_amount, last_units, last_amount)
                VALUES (sub.customer_id, sub.id, ch.id, coalesce(filter.id, 0), grouped, window_from, carried + delta,
                        greatest(carried, carried + delta), 1,
                        billing._price_rise(line_price, ch.rounding_function, ch.rounding_precision, carried, greatest(carried, carried + delta),
                                            carried = 0) * share,
                        billing._units_rise(ch.rounding_function, ch.rounding_precision, carried, greatest(carried, carried + delta)),
                        billing._price_rise(line_price, ch.rounding_function, ch.rounding_precision, carried, greatest(carried, carried + delta),
                                            carried = 0) * share)
                ON CONFLICT ON CONSTRAINT in_advance_usage_pkey DO UPDATE
                SET units = u.units + excluded.units - carried, billed_units = greatest(u.billed_units, u.units + excluded.units - carried),
                    events_count = u.events_count + 1,
                    last_units = billing._units_rise(ch.rounding_function, ch.rounding_precision, u.billed_units,
                                                     greatest(u.billed_units, u.units + excluded.units - carried)),
                    last_amount = billing._price_rise(line_price, ch.rounding_function, ch.rounding_precision, u.billed_units,
                                                      greatest(u.billed_units, u.units + excluded.units - carried), false) * share,
                    billed_amount = u.billed_amount
                                    + billing._price_rise(line_price, ch.rounding_function, ch.rounding_precision, u.billed_units,
                                                          greatest(u.billed_units, u.units + excluded.units - carried), false) * share
                RETURNING u.* INTO line;
            END IF;
            -- A charge billed in arrears: its price rise comes out of the burn-down wallets.
            IF NOT ch.in_advance THEN
                burned := billing._burn(sub, cust, ch.id, ch.metric_id, coalesce(filter.id, 0), grouped, window_from, line.last_amount);
                IF burned < line.last_amount THEN
                    short_subscriptions := short_subscriptions || sub.id;
                    shorts := shorts || (line.last_amount - burned);
                END IF;
                burned_customers := burned_customers || sub.customer_id;
                CONTINUE;
            END IF;
            -- A charge that is not invoiceable keeps its line (billed_amount) and no fee.
            CONTINUE WHEN NOT ch.invoiceable;
            INSERT INTO billing.fees AS fe (customer_id, invoice_id, subscription_id, fee_type, fee_key, charge_id, charge_filter_id,
                                            billable_metric_code, charge_model, filter_values, grouped_by, description, units, events_count,
                                            precise_unit_amount, precise_amount, amount, invoiceable, from_datetime, to_datetime)
            VALUES (sub.customer_id, invoice.id, sub.id, 'charge',
                    billing._usage_fee_key('in_advance', ch.id, filter.id, grouped, window_from, invoice.billing_at),
                    ch.id, filter.id, ch.metric_code, ch.model, filter."values", nullif(grouped, '{}'::jsonb),
                    coalesce(filter.invoice_display_name, ch.name), line.last_units, 1,
                    -- (nullif, not CASE: Citus plans the statement with the values as constants,
                    -- and folding the division by zero of the branch not taken fails.)
                    coalesce(line.last_amount / nullif(line.last_units, 0), 0),
                    line.last_amount, billing.round_money(line.last_amount, cust.currency), true, window_from, period_to)
            ON CONFLICT ON CONSTRAINT fees_billing_key DO UPDATE
            SET units = fe.units + excluded.units, events_count = fe.events_count + 1, precise_amount = fe.precise_amount + excluded.precise_amount,
                amount = billing.round_money(fe.precise_amount + excluded.precise_amount, cust.currency),
                precise_unit_amount = CASE WHEN fe.units + excluded.units = 0 THEN 0
                                           ELSE (fe.precise_amount + excluded.precise_amount) / (fe.units + excluded.units) END,
                to_datetime = excluded.to_datetime;
        END LOOP;
    END LOOP;
    FOR n IN 1 .. cardinality(invoices) LOOP
        PERFORM billing._total_invoice(customers[n], invoices[n]);
        IF invoices[n] = ANY (announce) THEN
            SELECT * INTO invoice FROM billing.invoices i WHERE i.customer_id = customers[n] AND i.id = invoices[n];
            PERFORM billing._emit(invoice.customer_id, 'invoice.created', billing._invoice_event(invoice));
        END IF;
    END LOOP;
    -- Spend control: what ingestion refuses (a cap enforced at ingestion), then the
    -- threshold top-ups that burn-down made due.
    FOR entry IN SELECT DISTINCT e.customer_id, e.subscription_id FROM unnest(customer_ids, subscription_ids) e(customer_id, subscription_id) ORDER BY 1, 2 LOOP
        PERFORM billing._enforce_spend(entry.customer_id, entry.subscription_id,
            coalesce((SELECT sum(x.short) FROM unnest(short_subscriptions, shorts) x(subscription_id, short) WHERE x.subscription_id = entry.subscription_id), 0));
    END LOOP;
    FOR entry IN SELECT DISTINCT b.customer_id FROM unnest(burned_customers) b(customer_id) ORDER BY 1 LOOP
        IF EXISTS (SELECT 1 FROM billing.wallet_recurring_rules r WHERE r.customer_id = entry.customer_id AND r.trigger = 'threshold') THEN
            PERFORM billing._check_threshold_rules(entry.customer_id);
        END IF;
    END LOOP;
END $$;

REVOKE ALL ON FUNCTION billing._check_pay_in_advance(integer, billing.billable_metrics, text),
    billing._bucket_units(billing.subscriptions, billing.customers, bigint, timestamptz, timestamptz),
    billing._price_rise(billing.price, text, integer, numeric, numeric, boolean), billing._units_rise(text, integer, numeric, numeric),
    billing._bill_carried_in_advance(billing.subscriptions, billing.customers, bigint, timestamptz, timestamptz, date, date, timestamptz),
    billing._in_advance_invoice(billing.subscriptions, billing.customers),
    billing._bill_in_advance(bigint[], bigint[], bigint[], timestamptz[], numeric[], jsonb[], bigint[], numeric[]) FROM PUBLIC;

-- pg_dump keeps the rows (the table belongs to the extension).
SELECT pg_catalog.pg_extension_config_dump('billing.in_advance_usage', '');

-- The usage fees of a window: one per charge, filter and pricing group, from the same
-- lines billing.usage reports; then each charge's minimum spend true-up.
CREATE OR REPLACE FUNCTION billing._add_usage_fees(
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
        WHERE c.plan_version_id = sub.plan_version_id AND NOT c.pay_in_advance
        UNION ALL
        SELECT c.id, cf.id, cf.price::billing.price, coalesce(cf.invoice_display_name, m.name), c.invoiceable
        FROM billing.charge_filters cf JOIN billing.charges c ON c.id = cf.charge_id JOIN billing.billable_metrics m ON m.id = c.billable_metric_id
        WHERE c.plan_version_id = sub.plan_version_id AND NOT c.pay_in_advance
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
        -- The window's fees of the charge: on this invoice, or billed at ingestion (paid in advance).
        LEFT JOIN billing.fees fe ON fe.customer_id = sub.customer_id AND fe.fee_type = 'charge' AND fe.charge_id = c.id
                                 AND (fe.invoice_id = _add_usage_fees.invoice_id
                                      OR (fe.subscription_id = sub.id AND fe.fee_key LIKE 'in\_advance:%' AND fe.from_datetime = window_from))
        WHERE c.plan_version_id = sub.plan_version_id AND c.min_amount IS NOT NULL
        GROUP BY c.id, c.min_amount, c.invoiceable, m.name
    LOOP
        CONTINUE WHEN minimum.missing = 0;
        PERFORM billing._add_fee(sub, cust, invoice_id, 'charge_minimum',
            billing._usage_fee_key('charge_minimum', minimum.id, NULL, '{}', window_from), minimum.name || ' (minimum spend)',
            minimum.missing, window_from, window_to, 1, minimum.id, minimum.invoiceable);
    END LOOP;
END $$;

-- The events a usage window of a subscription holds now, from the day rollups of the
-- metrics its plan version charges in arrears.
CREATE OR REPLACE FUNCTION billing._window_events(
    customer_id bigint, subscription_id bigint, plan_version_id bigint, from_datetime timestamptz, to_datetime timestamptz, timezone text
) RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
BEGIN
    RETURN (SELECT coalesce(sum(r.events_count), 0)::bigint
            FROM billing.usage_rollups r
            WHERE r.customer_id = customer_id AND r.subscription_id = subscription_id
              AND r.billable_metric_id IN (SELECT c.billable_metric_id FROM billing.charges c
                                           WHERE c.plan_version_id = plan_version_id AND NOT c.pay_in_advance)
              AND r.day BETWEEN (from_datetime AT TIME ZONE timezone)::date AND (to_datetime AT TIME ZONE timezone)::date);
END $$;

-- Metric rounding, applied after aggregation and before pricing. (A searched CASE: inlined
-- into a statement Citus 13.2 sends to its workers, a simple CASE on a constant is sent as
-- SQL they cannot run.)
CREATE OR REPLACE FUNCTION billing._round_units(units numeric, rounding_function text, rounding_precision integer) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN rounding_function = 'round' THEN round(units, coalesce(rounding_precision, 0))
        WHEN rounding_function = 'ceil'
            THEN ceil(units * power(10::numeric, coalesce(rounding_precision, 0))) / power(10::numeric, coalesce(rounding_precision, 0))
        WHEN rounding_function = 'floor'
            THEN floor(units * power(10::numeric, coalesce(rounding_precision, 0))) / power(10::numeric, coalesce(rounding_precision, 0))
        ELSE units END
$$;

-- Previews (sql/previews.sql).
-- Previews and verification. A preview is the invoice a subscription would get, computed by
-- the billing code itself and rolled back, so that a preview and the invoice the run creates
-- later cannot disagree. A verification recomputes a finalized invoice's usage from the raw
-- events (not the day rollups it was billed from) and checks its arithmetic.

-- The invoice the subscription would get at the end of the billing period that holds as_of,
-- from the usage recorded so far, finalized as the run would finalize it (coupons, taxes);
-- under another plan's current version when `plan` is given (what-if re-rating of the real
-- usage). Everything it computes is rolled back: nothing is written, no number is used, no
-- outbox event is sent. NULL when the subscription has nothing left to invoice.
CREATE FUNCTION billing.preview_invoice(external_subscription_id text, as_of timestamptz DEFAULT now(), plan text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    sub billing.subscriptions := billing._subscription(external_subscription_id);
    cust billing.customers;
    what_if billing.plan_versions;
    billed_plan bigint;
    last_billed timestamptz;
    bounds record;
    bill_at timestamptz;
    preview billing.invoices;
    draft billing.invoices;
    document jsonb;
BEGIN
    IF as_of IS NULL OR NOT isfinite(as_of) THEN
        PERFORM billing._invalid('as_of must be an instant', format('got %s', as_of), 'give an instant of the period to preview, or leave it to now()');
    END IF;
    SELECT * INTO cust FROM billing.customers c WHERE c.id = sub.customer_id;
    IF plan IS NOT NULL THEN
        what_if := billing._plan_version(plan);
        IF what_if.currency <> cust.currency THEN
            PERFORM billing._invalid(format('plan "%s" is priced in %s, customer "%s" is billed in %s', plan, what_if.currency,
                                            cust.external_id, cust.currency),
                format('got plan %s', plan), 'preview a plan priced in the customer''s currency');
        END IF;
    END IF;
    billed_plan := coalesce(what_if.id, ((billing._in_force(sub, as_of)).billed).plan_version_id);
    SELECT * INTO bounds FROM billing.period_bounds(
        (SELECT v.interval::text FROM billing.plan_versions v WHERE v.id = billed_plan),
        sub.billing_time::text, (coalesce(sub.started_at, sub.subscription_at) AT TIME ZONE cust.timezone)::date,
        greatest(as_of, coalesce(sub.started_at, sub.subscription_at)), cust.timezone);
    -- The period's close, or the termination; once the termination has passed, the run bills
    -- what is left (late usage) at as_of.
    bill_at := CASE WHEN sub.terminated_at <= as_of THEN as_of
                    ELSE least(bounds.to_datetime + interval '1 microsecond', coalesce(sub.terminated_at, 'infinity')) END;
    BEGIN
        -- The customer's drafts due before are finalized first, as the run would: they take
        -- coupons and credit before this invoice does.
        FOR draft IN
            SELECT * FROM billing.invoices i
            WHERE i.customer_id = sub.customer_id AND i.status = 'draft' AND i.billing_at < bill_at ORDER BY i.billing_at, i.id
        LOOP
            PERFORM billing.finalize_invoice(draft.id);
        END LOOP;
        IF what_if.id IS NOT NULL THEN
            -- What is not invoiced yet is re-rated on the what-if plan: all of it before the
            -- first invoice; otherwise, as a change just after the last invoice (its instant
            -- kept apart from a change invoiced at that instant), pending changes set aside.
            SELECT max(i.billing_at) INTO last_billed FROM billing.invoices i
            WHERE i.customer_id = sub.customer_id AND i.subscription_id = sub.id AND i.invoice_type = 'subscription';
            DELETE FROM billing.plan_changes pc
            WHERE pc.customer_id = sub.customer_id AND pc.subscription_id = sub.id AND pc.effective_at > coalesce(last_billed, '-infinity');
            IF last_billed IS NULL THEN
                UPDATE billing.subscriptions s SET plan_version_id = what_if.id WHERE s.customer_id = sub.customer_id AND s.id = sub.id;
            ELSE
                billed_plan := ((billing._in_force(sub, last_billed)).billed).plan_version_id;
                INSERT INTO billing.plan_changes (customer_id, subscription_id, effective_at, from_plan_version_id, to_plan_version_id, kind)
                VALUES (sub.customer_id, sub.id, last_billed + interval '1 microsecond', billed_plan, what_if.id, 'upgrade');
            END IF;
        END IF;
        SELECT * INTO preview FROM billing._bill_subscription(sub.customer_id, sub.id, bill_at) i
        ORDER BY i.billing_at DESC LIMIT 1;
        IF preview.id IS NOT NULL THEN
            IF preview.status = 'draft' THEN
                preview := billing._finalize(preview);
            END IF;
            document := billing.invoice_document(preview.id);
        END IF;
        -- Undoes everything above; the variables keep what was computed.
        RAISE EXCEPTION USING ERRCODE = 'BPRVW';
    EXCEPTION WHEN SQLSTATE 'BPRVW' THEN
        NULL;
    END;
    IF document IS NULL THEN
        RETURN NULL;
    END IF;
    -- What only a real invoice has: its id, number and finalization.
    RETURN document - ARRAY['id', 'number', 'finalized_at', 'payment_status'] || jsonb_build_object('status', 'preview');
END $$;

-- Each verification of an invoice, with its report (billing.verify_invoice).
CREATE TABLE billing.invoice_verifications (
    id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id bigint NOT NULL,
    invoice_id bigint NOT NULL,
    verified_at timestamptz NOT NULL DEFAULT now(),
    drifting_lines integer NOT NULL,
    totals_consistent boolean NOT NULL,
    report jsonb NOT NULL,
    PRIMARY KEY (customer_id, id),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES billing.invoices (customer_id, id)
);
CREATE INDEX invoice_verifications_by_invoice ON billing.invoice_verifications (customer_id, invoice_id, verified_at);

-- Recomputes a finalized invoice and records what it found. Usage: every usage line the
-- invoice billed (its charge fees, on the plan version they were billed on) is priced again
-- from the raw events and compared with everything billed for that line (the fee and any
-- later adjustments of it); a line drifts when the amounts or units differ, or when the
-- events price a line that was never billed. Arithmetic: fees_amount is the sum of the
-- rounded invoiced fees, coupons_amount the coupons', taxes_amount each tax's exact sum
-- rounded once, and the sub-totals and total follow pricing.md's order.
CREATE FUNCTION billing.verify_invoice(invoice_id bigint) RETURNS jsonb
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    inv billing.invoices := billing._invoice(invoice_id);
    sub billing.subscriptions;
    cust billing.customers;
    billed_sub billing.subscriptions;
    w record;
    recomputed billing.usage_line[];
    in_advance bigint[];
    checked integer := 0;
    drifts jsonb := '[]';
    window_drifts jsonb;
    window_lines integer;
    fees numeric;
    progressive numeric;
    coupons numeric;
    taxes numeric;
    credits numeric;
    consistent boolean;
    report jsonb;
BEGIN
    PERFORM billing._require_status(inv, 'finalized', 'verify_invoice');
    SELECT * INTO sub FROM billing.subscriptions s WHERE s.customer_id = inv.customer_id AND s.id = inv.subscription_id;
    SELECT * INTO cust FROM billing.customers c WHERE c.id = inv.customer_id;
    FOR w IN
        SELECT DISTINCT fe.from_datetime, fe.to_datetime, ch.plan_version_id
        FROM billing.fees fe JOIN billing.charges ch ON ch.id = fe.charge_id
        -- A progressive-billing invoice bills part of a period's usage: its period's invoice
        -- is checked against the whole.
        WHERE fe.customer_id = inv.customer_id AND fe.invoice_id = inv.id AND fe.fee_type = 'charge' AND inv.invoice_type = 'subscription'
        ORDER BY 1, 3
    LOOP
        billed_sub := sub;
        billed_sub.plan_version_id := w.plan_version_id;
        -- Computed apart, not in the query below: on Citus that query runs on the customer's
        -- shard, where a function reading distributed tables cannot.
        -- (Charges paid in advance are billed at ingestion, on invoices of their own.)
        in_advance := ARRAY(SELECT c.id FROM billing.charges c WHERE c.plan_version_id = w.plan_version_id AND c.pay_in_advance);
        recomputed := ARRAY(SELECT u FROM billing._usage(billed_sub, cust, w.from_datetime, w.to_datetime, true) u
                            WHERE NOT u.charge_id = ANY (in_advance));
        WITH billed AS (
            SELECT fe.charge_id, fe.charge_filter_id AS filter_id, coalesce(fe.grouped_by, '{}'::jsonb) AS grouped_by,
                   sum(fe.units) AS units, sum(fe.events_count)::bigint AS events_count, sum(fe.precise_amount) AS amount
            FROM billing.fees fe
            JOIN billing.invoices bi ON bi.customer_id = fe.customer_id AND bi.id = fe.invoice_id AND bi.invoice_type = 'subscription'
            WHERE fe.customer_id = inv.customer_id AND fe.subscription_id = inv.subscription_id
              AND fe.fee_type IN ('charge', 'adjustment') AND fe.from_datetime = w.from_datetime
              AND fe.charge_id IN (SELECT r.charge_id FROM unnest(recomputed) r)
            GROUP BY 1, 2, 3
        )
        SELECT count(*), coalesce(jsonb_agg(jsonb_build_object(
                   'charge_id', r.charge_id, 'metric_code', r.billable_metric_code, 'filter', r.filter_values,
                   'group', nullif(r.grouped_by, '{}'::jsonb), 'from', w.from_datetime, 'to', w.to_datetime,
                   'billed_units', coalesce(b.units, 0), 'billed_events', coalesce(b.events_count, 0), 'billed_amount', coalesce(b.amount, 0),
                   'units', r.units, 'events', r.events_count, 'amount', r.amount,
                   'cause', CASE WHEN r.events_count > coalesce(b.events_count, 0) THEN 'events arrived after billing'
                                 ELSE 'the raw events differ from what was billed' END)
                   ORDER BY r.charge_id, r.filter_id NULLS FIRST, r.grouped_by::text COLLATE "C")
                   FILTER (WHERE r.amount <> coalesce(b.amount, 0) OR r.units <> coalesce(b.units, 0)
                                 OR r.events_count <> coalesce(b.events_count, 0)), '[]')
        INTO window_lines, window_drifts
        FROM unnest(recomputed) r
        LEFT JOIN billed b ON b.charge_id = r.charge_id AND b.filter_id IS NOT DISTINCT FROM r.filter_id AND b.grouped_by = r.grouped_by
        WHERE b.charge_id IS NOT NULL OR r.amount <> 0 OR r.events_count <> 0;
        checked := checked + window_lines;
        drifts := drifts || window_drifts;
    END LOOP;

    SELECT coalesce(sum(fe.amount), 0), coalesce(sum(fe.progressive_credit_amount), 0) INTO fees, progressive FROM billing.fees fe
    WHERE fe.customer_id = inv.customer_id AND fe.invoice_id = inv.id AND fe.invoiceable;
    SELECT coalesce(sum(ic.amount), 0) INTO coupons FROM billing.invoice_coupons ic
    WHERE ic.customer_id = inv.customer_id AND ic.invoice_id = inv.id;
    SELECT coalesce(sum(icn.amount), 0) INTO credits FROM billing.invoice_credit_notes icn
    WHERE icn.customer_id = inv.customer_id AND icn.invoice_id = inv.id;
    taxes := billing._invoice_taxes_amount(inv.customer_id, inv.id, inv.currency);
    consistent := inv.fees_amount = fees AND inv.progressive_billing_credit_amount = progressive AND inv.coupons_amount = coupons
        AND inv.taxes_amount = taxes AND inv.credit_notes_amount = credits
        AND inv.sub_total_excluding_taxes = inv.fees_amount - inv.progressive_billing_credit_amount - inv.coupons_amount
        AND inv.sub_total_including_taxes = inv.sub_total_excluding_taxes + inv.taxes_amount
        AND inv.prepaid_credit_amount = billing._prepaid_credits_paid(inv.customer_id, inv.id)
        AND inv.total_amount = inv.sub_total_including_taxes - inv.credit_notes_amount - inv.prepaid_credit_amount;
    report := jsonb_build_object(
        'invoice_id', inv.id, 'number', inv.number, 'verified_at', now(), 'lines_checked', checked,
        'drifting_lines', drifts, 'totals_consistent', consistent,
        'totals', jsonb_build_object('fees_amount', fees, 'progressive_billing_credit_amount', progressive, 'coupons_amount', coupons, 'taxes_amount', taxes,
                                     'credit_notes_amount', credits));
    INSERT INTO billing.invoice_verifications (customer_id, invoice_id, drifting_lines, totals_consistent, report)
    VALUES (inv.customer_id, inv.id, jsonb_array_length(drifts), consistent, report);
    RETURN report;
END $$;

REVOKE ALL ON FUNCTION billing.preview_invoice(text, timestamptz, text), billing.verify_invoice(bigint) FROM PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('billing.invoice_verifications', '');
SELECT pg_catalog.pg_extension_config_dump('billing.invoice_verifications_id_seq', '');

-- Invoice totals with coupons and taxes; coupons come off at finalization; the invoice document lists both.
-- Sets an invoice's totals from its invoiceable fees (taxes, coupons, credit notes and
-- prepaid credits are zero until they exist).
CREATE OR REPLACE FUNCTION billing._total_invoice(customer_id bigint, invoice_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    fees numeric;
    progressive numeric;
    coupons numeric;
    taxes numeric;
    credits numeric;
    prepaid numeric;
BEGIN
    PERFORM billing._credit_progressive_billing(customer_id, invoice_id);
    SELECT coalesce(sum(fe.amount), 0), coalesce(sum(fe.progressive_credit_amount), 0) INTO fees, progressive FROM billing.fees fe
    WHERE fe.customer_id = customer_id AND fe.invoice_id = invoice_id AND fe.invoiceable;
    SELECT coalesce(sum(ic.amount), 0) INTO coupons FROM billing.invoice_coupons ic
    WHERE ic.customer_id = customer_id AND ic.invoice_id = invoice_id;
    SELECT coalesce(sum(icn.amount), 0) INTO credits FROM billing.invoice_credit_notes icn
    WHERE icn.customer_id = customer_id AND icn.invoice_id = invoice_id;
    prepaid := billing._prepaid_credits_paid(customer_id, invoice_id);
    taxes := billing._tax_fees(customer_id, invoice_id);
    UPDATE billing.invoices i
    SET fees_amount = fees, progressive_billing_credit_amount = progressive, coupons_amount = coupons,
        sub_total_excluding_taxes = fees - progressive - coupons, taxes_amount = taxes,
        sub_total_including_taxes = fees - progressive - coupons + taxes, credit_notes_amount = credits,
        prepaid_credit_amount = prepaid, total_amount = fees - progressive - coupons + taxes - credits - prepaid, refreshed_at = now()
    WHERE i.customer_id = customer_id AND i.id = invoice_id;
END $$;

-- For the fees and the rows that hang on them (their taxes): each names its customer and
-- invoice.
CREATE OR REPLACE FUNCTION billing._fee_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    invoice_status billing.invoice_status;
    what text := CASE TG_TABLE_NAME WHEN 'fees' THEN format('fee %s', to_jsonb(OLD) ->> 'id')
                                    ELSE format('a tax of fee %s', to_jsonb(OLD) ->> 'fee_id') END;
BEGIN
    SELECT i.status INTO invoice_status FROM billing.invoices i WHERE i.customer_id = OLD.customer_id AND i.id = OLD.invoice_id;
    IF invoice_status = 'draft' THEN
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    PERFORM billing._raise('55000', format('%s is on %s invoice %s and cannot be changed', what, invoice_status, OLD.invoice_id),
        format('%s of %s of a %s invoice', TG_OP, CASE TG_TABLE_NAME WHEN 'fees' THEN 'a fee' ELSE 'a fee''s tax' END, invoice_status),
        'correct a finalized invoice with a credit note or a later invoice');
    RETURN NULL;
END $$;

-- The invoice of a subscription at a billing instant, created (as a draft) if it is not
-- there yet.
CREATE OR REPLACE FUNCTION billing._invoice_at(sub billing.subscriptions, cust billing.customers, at timestamptz) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    invoice_id bigint;
BEGIN
    SELECT i.id INTO invoice_id FROM billing.invoices i
    WHERE i.customer_id = sub.customer_id AND i.subscription_id = sub.id AND i.billing_at = at AND i.invoice_type = 'subscription';
    IF NOT FOUND THEN
        INSERT INTO billing.invoices (customer_id, subscription_id, billing_entity_id, currency, timezone, billing_at, issuing_date)
        VALUES (sub.customer_id, sub.id, cust.billing_entity_id, cust.currency, cust.timezone, at, (at AT TIME ZONE cust.timezone)::date)
        RETURNING id INTO invoice_id;
    END IF;
    RETURN invoice_id;
END $$;

-- Recomputes a draft's fees from the usage as it is now.
CREATE OR REPLACE FUNCTION billing._refresh(inv billing.invoices) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    sub billing.subscriptions;
    cust billing.customers;
BEGIN
    -- A progressive-billing invoice bills the usage of the instant its threshold was crossed:
    -- only its totals are recomputed (a tax rate may have changed).
    IF inv.invoice_type <> 'subscription' THEN
        PERFORM billing._total_invoice(inv.customer_id, inv.id);
        RETURN;
    END IF;
    SELECT * INTO sub FROM billing.subscriptions s WHERE s.customer_id = inv.customer_id AND s.id = inv.subscription_id FOR UPDATE;
    DELETE FROM billing.fees fe WHERE fe.customer_id = inv.customer_id AND fe.invoice_id = inv.id;
    DELETE FROM billing.billed_windows bw WHERE bw.customer_id = inv.customer_id AND bw.invoice_id = inv.id;
    SELECT * INTO cust FROM billing.customers c WHERE c.id = inv.customer_id;
    PERFORM billing._bill_periods(sub, inv.billing_at, inv.billing_at);
    PERFORM billing._add_adjustments(sub, cust, inv.id, inv.billing_at);
    PERFORM billing._total_invoice(inv.customer_id, inv.id);
END $$;

-- Creates the plan on first use and a new version on every later call.
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

-- One invoice of each type per subscription and billing instant (a progressive-billing
-- invoice may share its instant with a termination).
ALTER TABLE billing.invoices DROP CONSTRAINT invoices_billing_key,
    ADD CONSTRAINT invoices_billing_key UNIQUE (customer_id, subscription_id, billing_at, invoice_type);

-- Gives a draft its coupons, credit, number, due date and finalized status.
-- Numbers are gapless: the counter row (per entity and month) or the customer row is
-- locked until the transaction ends, so concurrent finalizations take turns.
CREATE OR REPLACE FUNCTION billing._finalize(inv billing.invoices) RETURNS billing.invoices
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    entity billing.billing_entities;
    scope text;
    next_number bigint;
    invoice_number text;
    finalized billing.invoices;
BEGIN
    -- Coupons, then the credit of credit notes, then prepaid credits (what burn-down took for
    -- the usage, then the wallets) come off at finalization, never on a draft (pricing.md);
    -- each needs the totals the one before left. A credit-purchase invoice is paid in money.
    IF billing._apply_coupons(inv) THEN
        PERFORM billing._total_invoice(inv.customer_id, inv.id);
    END IF;
    IF inv.invoice_type <> 'credit' AND billing._apply_credit_notes(inv) THEN
        PERFORM billing._total_invoice(inv.customer_id, inv.id);
    END IF;
    IF billing._apply_burned_credits(inv) THEN
        PERFORM billing._total_invoice(inv.customer_id, inv.id);
    END IF;
    IF billing._apply_prepaid_credits(inv) THEN
        PERFORM billing._total_invoice(inv.customer_id, inv.id);
    END IF;
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
    PERFORM billing._settle_purchase(finalized);
    IF finalized.prepaid_credit_amount > 0
       AND EXISTS (SELECT 1 FROM billing.wallet_recurring_rules r WHERE r.customer_id = finalized.customer_id AND r.trigger = 'threshold') THEN
        PERFORM billing._check_threshold_rules(finalized.customer_id);
    END IF;
    RETURN finalized;
END $$;

CREATE OR REPLACE FUNCTION billing._require_status(inv billing.invoices, wanted billing.invoice_status, action text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF inv.status <> wanted THEN
        PERFORM billing._raise('55000', format('invoice %s is %s', inv.id, inv.status),
            format('%s needs a %s invoice', action, wanted),
            CASE WHEN wanted = 'draft' THEN 'finalized invoices are immutable; bill corrections on a later invoice'
                 WHEN inv.status = 'voided' THEN 'a voided invoice takes no further change'
                 ELSE 'finalize the draft first with billing.finalize_invoice' END);
    END IF;
END $$;

-- Bills one subscription up to as_of, in the caller's transaction: creates the invoices of
-- every billing instant due and not yet billed, each with the late usage of periods already
-- invoiced, and finalizes those the billing entity's grace period does not keep as drafts.
-- A terminated subscription has no next invoice: late usage of its periods gets an invoice
-- of its own, at as_of. The subscription's row lock makes concurrent callers take turns;
-- the second finds everything billed. Returns the invoices created.
CREATE OR REPLACE FUNCTION billing._bill_subscription(customer_id bigint, subscription_id bigint, as_of timestamptz)
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
    -- The upgrades that have happened: their instants and the plans they left.
    upgrades timestamptz[];
    upgraded_from bigint[];
    ends_early boolean;
BEGIN
    SELECT * INTO sub FROM billing.subscriptions s WHERE s.customer_id = customer_id AND s.id = subscription_id FOR UPDATE;
    SELECT * INTO cust FROM billing.customers c WHERE c.id = customer_id;
    SELECT e.grace_period_days INTO grace FROM billing.billing_entities e WHERE e.id = cust.billing_entity_id;
    SELECT coalesce(array_agg(pc.effective_at ORDER BY pc.effective_at), '{}'),
           coalesce(array_agg(pc.from_plan_version_id ORDER BY pc.effective_at), '{}')
    INTO upgrades, upgraded_from
    FROM billing.plan_changes pc WHERE pc.customer_id = customer_id AND pc.subscription_id = subscription_id
      AND pc.kind = 'upgrade' AND pc.effective_at <= as_of;
    IF EXISTS (SELECT 1 FROM billing.plan_changes pc WHERE pc.customer_id = customer_id AND pc.subscription_id = subscription_id) THEN
        PERFORM billing._apply_plan_changes(as_of, customer_id, subscription_id);
        SELECT * INTO sub FROM billing.subscriptions s WHERE s.customer_id = customer_id AND s.id = subscription_id;
    END IF;
    -- A plan paid in advance that ends early (an upgrade, a termination) credits its unused
    -- days before the invoice of that instant is finalized, which is the first to consume the
    -- credit: here for fees invoiced before, below for fees invoiced in this call.
    ends_early := cardinality(upgrades) > 0 OR (sub.status = 'terminated' AND sub.terminated_at <= as_of);
    IF ends_early THEN
        PERFORM billing._credit_ended_plans(sub, cust, upgrades, upgraded_from, as_of);
    END IF;
    created := ARRAY(SELECT b FROM billing._bill_periods(sub, as_of) b ORDER BY b);
    -- Usage thresholds crossed in the open period (of the plan in force): a progressive-billing invoice.
    invoice_id := billing._bill_usage_thresholds((billing._in_force(sub, as_of)).billed, cust, as_of);
    IF invoice_id IS NOT NULL THEN
        created := created || invoice_id;
    END IF;
    -- (Two statements: on Citus, a query may not both read a distributed table and call a
    -- function that reads one.)
    IF created = '{}' AND sub.status = 'terminated' AND EXISTS (SELECT 1 FROM billing._late_windows(sub, cust, NULL)) THEN
        -- Not onto an invoice finalized at this very instant (a preview at the termination).
        IF NOT EXISTS (SELECT 1 FROM billing.invoices i WHERE i.customer_id = customer_id AND i.subscription_id = subscription_id
                       AND i.billing_at = as_of AND i.status <> 'draft') THEN
            created := ARRAY[billing._invoice_at(sub, cust, as_of)];
        END IF;
    END IF;
    FOREACH invoice_id IN ARRAY created LOOP
        SELECT * INTO inv FROM billing.invoices i WHERE i.customer_id = customer_id AND i.id = invoice_id;
        IF ends_early THEN
            PERFORM billing._credit_ended_plans(sub, cust, upgrades, upgraded_from, inv.billing_at);
        END IF;
        -- Late usage goes on subscription invoices, which the adjustments count.
        IF inv.invoice_type = 'subscription' THEN
            PERFORM billing._add_adjustments(sub, cust, invoice_id, inv.billing_at);
        END IF;
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

-- The usage windows of a subscription's finalized invoices that hold more events now than
-- any invoice (but `invoice_id`) saw: events that arrived after their period was invoiced.
-- Only windows invoiced before `invoice_id` count: an older draft refreshed after a later
-- invoice was finalized does not take that invoice's late usage.
CREATE OR REPLACE FUNCTION billing._late_windows(sub billing.subscriptions, cust billing.customers, invoice_id bigint)
RETURNS TABLE (from_datetime timestamptz, to_datetime timestamptz, plan_version_id bigint, events_now bigint)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w record;
    before timestamptz;
BEGIN
    SELECT i.billing_at INTO before FROM billing.invoices i WHERE i.customer_id = sub.customer_id AND i.id = invoice_id;
    before := coalesce(before, 'infinity');
    -- The counts are taken here, not in the query: on Citus that query runs on the
    -- customer's shard, where a function reading another distributed table cannot.
    FOR w IN
        SELECT bw.from_datetime, max(bw.to_datetime) AS to_datetime, min(bw.plan_version_id) AS plan_version_id,
               max(bw.events_count) AS events_count
        FROM billing.billed_windows bw
        JOIN billing.invoices i ON i.customer_id = bw.customer_id AND i.id = bw.invoice_id
        WHERE bw.customer_id = sub.customer_id AND bw.subscription_id = sub.id AND bw.invoice_id IS DISTINCT FROM invoice_id
        GROUP BY bw.from_datetime
        HAVING bool_or(NOT bw.adjustment AND i.status <> 'draft' AND i.billing_at < before)
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

-- Bills a subscription up to `as_of`: walks its plans (billing._plan_segments) and each
-- one's periods from the start, and adds, on the invoice of each billing instant, what falls
-- due there. With `only_at`, recomputes the fees of that one instant (a draft's refresh);
-- without it, bills every instant after the last one invoiced. Returns the invoices it
-- created.
CREATE OR REPLACE FUNCTION billing._bill_periods(sub billing.subscriptions, as_of timestamptz, only_at timestamptz DEFAULT NULL)
RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    cust billing.customers;
    tz text;
    first_start timestamptz := coalesce(sub.started_at, sub.subscription_at);
    anchor date;
    last_billed timestamptz;
    created bigint[] := '{}';
    segment record;
BEGIN
    IF first_start > as_of THEN
        RETURN;
    END IF;
    SELECT * INTO cust FROM billing.customers c WHERE c.id = sub.customer_id;
    tz := cust.timezone;
    -- Every plan keeps the subscription's original anniversary.
    anchor := (first_start AT TIME ZONE tz)::date;
    SELECT max(i.billing_at) INTO last_billed FROM billing.invoices i
    WHERE i.customer_id = sub.customer_id AND i.subscription_id = sub.id AND i.invoice_type = 'subscription';
    FOR segment IN SELECT * FROM billing._plan_segments(sub) LOOP
        EXIT WHEN segment.from_at > as_of OR segment.from_at >= coalesce(sub.terminated_at, 'infinity');
        created := created || ARRAY(SELECT billing._bill_plan_periods(sub, cust, segment.plan_version_id, segment.from_at,
                                                                      segment.until_at, segment.from_at = first_start, anchor,
                                                                      last_billed, as_of, only_at));
    END LOOP;
    RETURN QUERY SELECT DISTINCT unnest(created);
END $$;

-- Late events: for each late window, the difference of each usage line (its amount now
-- minus everything its fees and earlier adjustments billed) becomes an adjustment fee on
-- this invoice.
CREATE OR REPLACE FUNCTION billing._add_adjustments(sub billing.subscriptions, cust billing.customers, invoice_id bigint, at timestamptz)
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
        -- Charges paid in advance bill late events at ingestion.
        JOIN billing.charges ch ON ch.id = u.charge_id AND NOT ch.pay_in_advance
        JOIN billing.billable_metrics m ON m.id = ch.billable_metric_id
        CROSS JOIN LATERAL (
            -- Everything billed for this line so far, voided invoices included: voiding an
            -- invoice does not put its usage up for billing again.
            SELECT coalesce(sum(fe.units), 0) AS units, coalesce(sum(fe.events_count), 0) AS events_count,
                   coalesce(sum(fe.precise_amount), 0) AS precise_amount
            FROM billing.fees fe
            JOIN billing.invoices i ON i.customer_id = fe.customer_id AND i.id = fe.invoice_id AND i.invoice_type = 'subscription'
            WHERE fe.customer_id = sub.customer_id AND fe.subscription_id = sub.id AND fe.fee_type IN ('charge', 'adjustment')
              AND fe.charge_id = u.charge_id AND fe.charge_filter_id IS NOT DISTINCT FROM u.filter_id
              AND coalesce(fe.grouped_by, '{}'::jsonb) = u.grouped_by AND fe.from_datetime = w.from_datetime
        ) prior
        WHERE u.events_count <> prior.events_count OR u.amount <> prior.precise_amount;
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION billing.void_invoice(invoice_id bigint) RETURNS billing.invoices
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
    -- Its credit notes' credit would outlive it.
    IF EXISTS (SELECT 1 FROM billing.credit_notes cn WHERE cn.customer_id = inv.customer_id AND cn.invoice_id = inv.id
               AND cn.credit_status <> 'voided') THEN
        PERFORM billing._raise('55000', format('invoice %s has credit notes', inv.id), 'voiding it would leave their credit standing',
            'void its credit notes first with billing.void_credit_note; an invoice whose credit was consumed stays, corrected');
    END IF;
    UPDATE billing.invoices i SET status = 'voided', voided_at = now()
    WHERE i.customer_id = inv.customer_id AND i.id = inv.id RETURNING * INTO inv;
    PERFORM billing._void_wallet_transactions(inv);
    PERFORM billing._emit(inv.customer_id, 'invoice.voided', billing._invoice_event(inv));
    RETURN inv;
END $$;

-- Everything needed to render or send an invoice, as one JSON document (shape in
-- docs/reference/invoicing.md).
CREATE OR REPLACE FUNCTION billing.invoice_document(invoice_id bigint) RETURNS jsonb
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
                       'details', fe.amount_details, 'progressive_credit_amount', nullif(fe.progressive_credit_amount, 0),
                       'coupons_amount', nullif(fe.precise_coupons_amount, 0), 'taxes', lt.taxes,
                       'from', fe.from_datetime, 'to', fe.to_datetime))
                   ORDER BY fe.fee_type, fe.charge_id NULLS FIRST, fe.charge_filter_id NULLS FIRST, fe.grouped_by::text COLLATE "C" NULLS FIRST, fe.id)
            FROM billing.fees fe
            LEFT JOIN (SELECT ft.fee_id, jsonb_agg(jsonb_build_object('code', ft.tax_code, 'rate', ft.tax_rate, 'amount', ft.precise_amount)
                                                   ORDER BY ft.tax_code) AS taxes
                       FROM billing.fee_taxes ft WHERE ft.customer_id = inv.customer_id AND ft.invoice_id = inv.id
                       GROUP BY ft.fee_id) lt ON lt.fee_id = fe.id
            WHERE fe.customer_id = inv.customer_id AND fe.invoice_id = inv.id AND fe.invoiceable), '[]'),
        'credit_notes', coalesce((
            SELECT jsonb_agg(jsonb_build_object('number', cn.number, 'amount', icn.amount) ORDER BY cn.created_at, cn.id)
            FROM billing.invoice_credit_notes icn
            JOIN billing.credit_notes cn ON cn.customer_id = icn.customer_id AND cn.id = icn.credit_note_id
            WHERE icn.customer_id = inv.customer_id AND icn.invoice_id = inv.id), '[]'),
        'coupons', coalesce((
            SELECT jsonb_agg(jsonb_build_object('code', ic.coupon_code, 'name', ic.coupon_name, 'amount', ic.amount)
                             ORDER BY ic.applied_coupon_id)
            FROM billing.invoice_coupons ic WHERE ic.customer_id = inv.customer_id AND ic.invoice_id = inv.id), '[]'),
        'taxes', coalesce((
            SELECT jsonb_agg(jsonb_build_object('code', t.tax_code, 'name', t.tax_name, 'rate', t.tax_rate,
                                                'base_amount', t.base_amount, 'amount', billing.round_money(t.amount, inv.currency))
                             ORDER BY t.tax_code)
            FROM (SELECT ft.tax_code, ft.tax_name, ft.tax_rate, sum(ft.base_amount) AS base_amount, sum(ft.precise_amount) AS amount
                  FROM billing.fee_taxes ft WHERE ft.customer_id = inv.customer_id AND ft.invoice_id = inv.id
                  GROUP BY ft.tax_code, ft.tax_name, ft.tax_rate) t), '[]'),
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

-- BI views of taxes, coupons and verifications (sql/bi.sql).
-- The taxes finalized invoices collected, per month of issuing date, currency and tax (code,
-- name and rate as invoiced): each invoice's amount of a tax is its exact sum rounded once.
CREATE VIEW billing_bi.taxes_collected AS
SELECT date_trunc('month', i.issuing_date)::date AS month, i.currency, t.tax_code, t.tax_name, t.tax_rate,
       count(*)::bigint AS invoices, sum(t.base_amount) AS base_amount, sum(billing.round_money(t.amount, i.currency)) AS amount
FROM (SELECT ft.customer_id, ft.invoice_id, ft.tax_code, ft.tax_name, ft.tax_rate, sum(ft.base_amount) AS base_amount,
             sum(ft.precise_amount) AS amount
      FROM billing.fee_taxes ft GROUP BY 1, 2, 3, 4, 5) t
JOIN billing.invoices i ON i.customer_id = t.customer_id AND i.id = t.invoice_id
WHERE i.status = 'finalized'
GROUP BY 1, 2, 3, 4, 5;

-- What coupons took off finalized invoices, per month of issuing date, currency and coupon.
CREATE VIEW billing_bi.coupons_redeemed AS
SELECT date_trunc('month', i.issuing_date)::date AS month, i.currency, ic.coupon_code, ic.coupon_name,
       count(*)::bigint AS invoices, count(DISTINCT ic.customer_id)::bigint AS customers, sum(ic.amount) AS amount
FROM billing.invoice_coupons ic
JOIN billing.invoices i ON i.customer_id = ic.customer_id AND i.id = ic.invoice_id
WHERE i.status = 'finalized'
GROUP BY 1, 2, 3, 4;

-- Every credit note, with its invoice and customer: totals, refund, credit and what is left.
CREATE VIEW billing_bi.credit_notes AS
SELECT cn.id AS credit_note_id, cn.number, i.number AS invoice_number, c.external_id AS customer_external_id, cn.reason::text AS reason,
       cn.currency, cn.sub_total_excluding_taxes, cn.taxes_amount, cn.total_amount, cn.refund_amount, cn.credit_amount,
       cn.balance_amount, cn.credit_status::text AS credit_status, cn.created_at, cn.voided_at
FROM billing.credit_notes cn
JOIN billing.invoices i ON i.customer_id = cn.customer_id AND i.id = cn.invoice_id
JOIN billing.customers c ON c.id = cn.customer_id;

-- Finalized invoices never verified (billing.verify_invoice), or whose latest verification
-- found drifting lines or inconsistent totals.
CREATE VIEW billing_bi.invoices_to_verify AS
SELECT i.id AS invoice_id, i.number, c.external_id AS customer_external_id, i.currency, i.issuing_date, i.total_amount,
       CASE WHEN v.verified_at IS NULL THEN 'unverified' ELSE 'drift' END AS verification,
       v.verified_at, v.drifting_lines, v.totals_consistent
FROM billing.invoices i
JOIN billing.customers c ON c.id = i.customer_id
LEFT JOIN (SELECT DISTINCT ON (x.customer_id, x.invoice_id) x.customer_id, x.invoice_id, x.verified_at, x.drifting_lines,
                  x.totals_consistent
           FROM billing.invoice_verifications x
           ORDER BY x.customer_id, x.invoice_id, x.verified_at DESC, x.id DESC) v
       ON v.customer_id = i.customer_id AND v.invoice_id = i.id
WHERE i.status = 'finalized' AND (v.verified_at IS NULL OR v.drifting_lines > 0 OR NOT v.totals_consistent);

-- Every plan change, with the plans on both sides: pending until its instant has come.
CREATE VIEW billing_bi.plan_changes AS
SELECT s.external_id AS subscription_external_id, c.external_id AS customer_external_id, pc.kind::text AS kind,
       fp.code AS from_plan_code, fv.version AS from_plan_version, tp.code AS to_plan_code, tv.version AS to_plan_version,
       pc.effective_at, CASE WHEN pc.effective_at > now() THEN 'pending' ELSE 'effective' END AS status, pc.requested_at
FROM billing.plan_changes pc
JOIN billing.subscriptions s ON s.customer_id = pc.customer_id AND s.id = pc.subscription_id
JOIN billing.customers c ON c.id = pc.customer_id
JOIN billing.plan_versions fv ON fv.id = pc.from_plan_version_id
JOIN billing.plans fp ON fp.id = fv.plan_id
JOIN billing.plan_versions tv ON tv.id = pc.to_plan_version_id
JOIN billing.plans tp ON tp.id = tv.plan_id;

GRANT SELECT ON billing_bi.taxes_collected, billing_bi.coupons_redeemed, billing_bi.credit_notes, billing_bi.invoices_to_verify, billing_bi.plan_changes TO billing_reader, billing_admin;

-- billing.distribute() places the tax tables.
-- Scale-out on Citus: billing.distribute() turns a pg_billing database on a Citus
-- coordinator into a distributed one. Per-customer tables (customers, subscriptions,
-- events, usage_rollups, invoices, fees, billed_windows, billing_failures, outbox,
-- customer_taxes, fee_taxes, applied_coupons, invoice_coupons, invoice_verifications,
-- applied_usage_thresholds, subscription_fixed_charge_units and the credit notes' four
-- tables) are distributed by customer and colocated, so one customer's rows live in one
-- shard group; the catalog (with the taxes and their attachments, the coupons, the add-ons,
-- the usage thresholds and the fixed charges), the two directories and the per-entity
-- invoice counters become reference tables, copied to every node; rejected_events and the
-- COPY intake and staging tables stay local to the coordinator, where ingestion runs.
CREATE OR REPLACE FUNCTION billing.distribute(shard_count integer DEFAULT NULL)
RETURNS TABLE (table_name text, placement text)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    reference_tables text[] := ARRAY['billing_entities', 'billable_metrics', 'plans', 'plan_versions', 'charges',
                                     'charge_filters', 'customer_directory', 'subscription_directory', 'invoice_sequences',
                                     'taxes', 'billing_entity_taxes', 'plan_taxes', 'charge_taxes', 'coupons', 'coupon_plans',
                                     'coupon_billable_metrics', 'add_ons', 'add_on_taxes', 'usage_thresholds', 'fixed_charges',
                                     'wallet_directory'];
    per_customer_tables text[] := ARRAY['subscriptions', 'events', 'usage_rollups', 'invoices', 'fees', 'billed_windows',
                                        'billing_failures', 'outbox', 'customer_taxes', 'fee_taxes', 'applied_coupons',
                                        'invoice_coupons', 'invoice_verifications', 'credit_notes', 'credit_note_items',
                                        'credit_note_taxes', 'invoice_credit_notes', 'applied_usage_thresholds',
                                        'subscription_fixed_charge_units', 'plan_changes', 'in_advance_usage', 'wallets',
                                        'wallet_transactions', 'wallet_recurring_rules', 'spend_caps', 'burned_usage'];
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

-- billing_admin holds every table, sequence and routine of schema billing (sql/bi.sql).
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES ON billing.taxes, billing.billing_entity_taxes, billing.plan_taxes,
    billing.charge_taxes, billing.customer_taxes, billing.fee_taxes, billing.coupons, billing.coupon_plans,
    billing.coupon_billable_metrics, billing.applied_coupons, billing.invoice_coupons, billing.invoice_verifications, billing.add_ons,
    billing.add_on_taxes, billing.credit_notes, billing.credit_note_items, billing.credit_note_taxes, billing.invoice_credit_notes,
    billing.usage_thresholds, billing.applied_usage_thresholds, billing.fixed_charges, billing.subscription_fixed_charge_units,
    billing.plan_changes, billing.in_advance_usage TO billing_admin;
GRANT USAGE, SELECT, UPDATE ON SEQUENCE billing.taxes_id_seq, billing.coupons_id_seq, billing.applied_coupons_id_seq,
    billing.invoice_verifications_id_seq, billing.add_ons_id_seq, billing.credit_notes_id_seq, billing.usage_thresholds_id_seq,
    billing.fixed_charges_id_seq TO billing_admin;
GRANT EXECUTE ON FUNCTION billing._customer(text), billing._plan_version(text), billing._invoice_taxes_amount(bigint, bigint, text), billing._tax(text), billing._check_tax_rate(numeric),
    billing.create_tax(text, text, numeric, text), billing.update_tax(text, numeric, text, text),
    billing.set_taxes(text, text, text[]), billing._tax_fees(bigint, bigint), billing._coupon(text),
    billing.create_coupon(text, text, text, numeric, text, numeric, text, integer, timestamptz, text[], text[]),
    billing.apply_coupon(text, text, numeric), billing.terminate_coupon(text, text), billing._apply_coupons(billing.invoices),
    billing.preview_invoice(text, timestamptz, text), billing.verify_invoice(bigint), billing.create_add_on(text, text, numeric, text, text),
    billing.create_one_off_invoice(text, jsonb), billing._creditable(bigint, bigint),
    billing.create_credit_note(bigint, jsonb, text, numeric, numeric, text), billing.void_credit_note(bigint),
    billing._apply_credit_notes(billing.invoices), billing._credit_unused_days(billing.subscriptions, billing.customers, bigint, timestamptz, date),
    billing.set_usage_thresholds(text, jsonb), billing._lifetime_usage(billing.subscriptions, billing.customers, timestamptz, timestamptz),
    billing._bill_usage_thresholds(billing.subscriptions, billing.customers, timestamptz), billing._credit_progressive_billing(bigint, bigint),
    billing.add_fixed_charge(text, text, text, jsonb, numeric, boolean, boolean), billing.set_fixed_charge_units(text, text, numeric, timestamptz),
    billing._add_fixed_charge_fees(billing.subscriptions, billing.customers, bigint, boolean, date, date, timestamptz, timestamptz, text),
    billing._fixed_charge_units(bigint, bigint, bigint, timestamptz), billing._plan_segments(billing.subscriptions),
    billing._in_force(billing.subscriptions, timestamptz), billing._yearly_amount(billing.plan_versions),
    billing._apply_plan_changes(timestamptz, bigint, bigint), billing._note_plan_versions(billing.subscriptions),
    billing.change_plan(text, text, timestamptz), billing.cancel_plan_change(text),
    billing._add_base_fee(billing.subscriptions, billing.customers, bigint, billing.plan_versions, text, date, date, integer, timestamptz, timestamptz, text),
    billing._bill_plan_periods(billing.subscriptions, billing.customers, bigint, timestamptz, timestamptz, boolean, date, timestamptz, timestamptz, timestamptz),
    billing._credit_ended_plans(billing.subscriptions, billing.customers, timestamptz[], bigint[], timestamptz),
    billing._check_pay_in_advance(integer, billing.billable_metrics, text), billing._in_advance_invoice(billing.subscriptions, billing.customers),
    billing._bill_in_advance(bigint[], bigint[], bigint[], timestamptz[], numeric[], jsonb[], bigint[], numeric[]),
    billing._bucket_units(billing.subscriptions, billing.customers, bigint, timestamptz, timestamptz),
    billing._bill_carried_in_advance(billing.subscriptions, billing.customers, bigint, timestamptz, timestamptz, date, date, timestamptz),
    billing._price_rise(billing.price, text, integer, numeric, numeric, boolean), billing._units_rise(text, integer, numeric, numeric)
    TO billing_admin;

COMMENT ON FUNCTION billing.distribute(integer) IS 'On a Citus coordinator: distributes pg_billing by customer in one call (customers, subscriptions, events, usage_rollups, invoices, fees, billed_windows, billing_failures, outbox, customer_taxes, fee_taxes, applied_coupons, invoice_coupons, invoice_verifications, applied_usage_thresholds, subscription_fixed_charge_units and the credit note tables distributed and colocated, shard_count shards each, default citus.shard_count; the catalog, the taxes and their attachments, the coupons and their limits, the add-ons, the usage thresholds, the fixed charges, the directories and invoice_sequences as reference tables; rejected_events and the COPY tables local). Returns each table with its placement. 55000 without Citus or when already distributed.';
COMMENT ON FUNCTION billing._fee_immutable() IS 'Private: trigger refusing changes to the fees of finalized and voided invoices, and to their taxes (55000).';
COMMENT ON FUNCTION billing.activate_subscriptions(timestamptz) IS 'Marks pending subscriptions whose start has come as active and applies the plan changes whose instant has come; returns how many subscriptions it activated.';
COMMENT ON TYPE billing.invoice_type IS 'What an invoice bills: subscription (a subscription''s periods), one_off (one-off items), progressive_billing (usage past a threshold), pay_in_advance (a day''s events of charges paid in advance).';
COMMENT ON TYPE billing.fee_type IS 'What a fee bills: subscription (base fee), charge (usage, in arrears or paid in advance), charge_minimum (a charge''s minimum spend true-up), commitment (the plan''s minimum commitment true-up), adjustment (late usage of a finalized period), add_on (a one-off item), fixed_charge (units of an add-on on a plan).';
COMMENT ON TABLE billing.taxes IS 'Taxes: code, name, rate in percent (0 to 100) and description. A rate change applies to invoices whose totals are computed afterwards, never to finalized ones.';
COMMENT ON TABLE billing.billing_entity_taxes IS 'The default taxes of a billing entity''s customers (the last in precedence: charge, plan, customer, billing entity).';
COMMENT ON TABLE billing.plan_taxes IS 'The taxes of a plan''s fees (base, usage without charge taxes, minimums and commitment), before the customer''s and the entity''s.';
COMMENT ON TABLE billing.charge_taxes IS 'The taxes of a charge''s fees, first in precedence.';
COMMENT ON TABLE billing.customer_taxes IS 'The taxes of a customer''s fees when neither their charge nor their plan has taxes.';
COMMENT ON TABLE billing.fee_taxes IS 'Each tax on each invoiced fee, with the tax''s code, name and rate when the invoice''s totals were computed; base_amount is the rounded fee, precise_amount = base_amount x rate / 100 exactly. The invoice rounds each tax''s sum once. Immutable once the invoice is finalized.';
COMMENT ON FUNCTION billing.create_tax(text, text, numeric, text) IS 'Creates a tax: code (unique), name, rate in percent (0 to 100; 22023 otherwise), description. 23505 if the code exists.';
COMMENT ON FUNCTION billing.update_tax(text, numeric, text, text) IS 'Changes a tax''s rate, name or description (what is NULL stays). Invoices whose totals are computed afterwards use it: new invoices, drafts refreshed or finalized; never finalized ones. 23503 unknown tax, 22023 bad rate.';
COMMENT ON FUNCTION billing.set_taxes(text, text, text[]) IS 'Sets the taxes of a billing_entity (by code), customer (by external id), plan (by code), charge (by id) or add_on (by code), replacing those it had (an empty array removes them); returns the codes now set. 22023 unknown target kind, 23503 unknown target or tax.';
COMMENT ON FUNCTION billing._tax(text) IS 'Private: the tax with this code, or 23503.';
COMMENT ON FUNCTION billing._check_tax_rate(numeric) IS 'Private: the rate if it is a percentage from 0 to 100, else 22023.';
COMMENT ON FUNCTION billing._tax_fees(bigint, bigint) IS 'Private: taxes a draft''s invoiced fees anew (charge taxes, else the first set of plan, customer and billing entity) and returns the invoice''s tax total, each tax''s exact sum rounded once.';
COMMENT ON TYPE billing.coupon_type IS 'fixed_amount (an amount in a currency) or percentage (a rate in percent).';
COMMENT ON TYPE billing.coupon_frequency IS 'once (one invoice; a fixed amount carries its remainder to the next ones), recurring (frequency_duration invoices) or forever.';
COMMENT ON TYPE billing.applied_coupon_status IS 'active or terminated (used up, expired in its duration, or terminated by billing.terminate_coupon).';
COMMENT ON TABLE billing.coupons IS 'Coupons: code, name, fixed_amount (amount, currency) or percentage (percentage_rate), frequency once / recurring (frequency_duration invoices) / forever, expires_at (no longer applicable to customers after it).';
COMMENT ON TABLE billing.coupon_plans IS 'The plans a coupon is limited to: it covers the invoices of subscriptions to them.';
COMMENT ON TABLE billing.coupon_billable_metrics IS 'The billable metrics a coupon is limited to: it covers the fees of charges on them.';
COMMENT ON TABLE billing.applied_coupons IS 'Coupons applied to customers, with what is left: amount_remaining of a once fixed_amount coupon, frequency_duration_remaining of a recurring one; status active or terminated.';
COMMENT ON TABLE billing.invoice_coupons IS 'What each coupon took off each finalized invoice, rounded to the currency; the fees carry its spread in precise_coupons_amount.';
COMMENT ON COLUMN billing.fees.precise_coupons_amount IS 'The fee''s share of the invoice''s coupons, pro rata to what was left of the fee, with 5 decimals; set at finalization. Taxes apply to amount - precise_coupons_amount.';
COMMENT ON FUNCTION billing.create_coupon(text, text, text, numeric, text, numeric, text, integer, timestamptz, text[], text[]) IS 'Creates a coupon: fixed_amount (amount, currency) or percentage (percentage_rate), frequency once / recurring (frequency_duration) / forever, optional expiry, limited to plans or to billable metrics (not both). 22023 bad input, 23503 unknown plan or metric, 23505 existing code.';
COMMENT ON FUNCTION billing.apply_coupon(text, text, numeric) IS 'Applies a coupon to a customer (amount overrides a fixed coupon''s); it comes off the customer''s invoices at finalization. 23503 unknown customer or coupon, 55000 expired coupon, 23505 already active for the customer, 22023 currency or amount mismatch.';
COMMENT ON FUNCTION billing.terminate_coupon(text, text) IS 'Ends a customer''s active application of a coupon. 23503 when the customer has none.';
COMMENT ON FUNCTION billing._coupon(text) IS 'Private: the coupon with this code, or 23503.';
COMMENT ON FUNCTION billing._apply_coupons(billing.invoices) IS 'Private: takes the customer''s active coupons off an invoice being finalized (metric-limited, then plan-limited, then the rest, by application order): records each amount, spreads it over the covered fees and uses the coupons up.';
COMMENT ON FUNCTION billing.preview_invoice(text, timestamptz, text) IS 'The invoice document the subscription would get at the end of the billing period holding as_of, from the usage so far, finalized as the run would (coupons, taxes), optionally under another plan''s current version; computed by the billing code and rolled back, writing nothing. status is preview; no id or number. NULL when nothing is left to invoice. 23503 unknown subscription or plan, 22023 a plan in another currency.';
COMMENT ON VIEW billing_bi.taxes_collected IS 'Taxes of finalized invoices per month of issuing date, currency and tax (code, name, rate as invoiced): invoices, taxed base and amount (each invoice''s tax rounded once).';
COMMENT ON VIEW billing_bi.coupons_redeemed IS 'What coupons took off finalized invoices per month of issuing date, currency and coupon: invoices, customers, amount.';
COMMENT ON VIEW billing_bi.invoices_to_verify IS 'Finalized invoices never verified by billing.verify_invoice (verification unverified), or whose latest verification found drifting lines or inconsistent totals (verification drift).';
COMMENT ON TABLE billing.invoice_verifications IS 'Each billing.verify_invoice of an invoice: when, how many usage lines drift, whether the totals are consistent, and the whole report.';
COMMENT ON FUNCTION billing.verify_invoice(bigint) IS 'Recomputes a finalized invoice''s usage lines from the raw events on the plan version they were billed on, compares them with everything billed for them (fee and later adjustments), checks the totals'' arithmetic, records and returns the report (drifting_lines empty and totals_consistent true when all is right). 23503 unknown invoice, 55000 not finalized.';
COMMENT ON TABLE billing.add_ons IS 'Add-ons: one-off items with a default price (amount in currency) for one-off invoices.';
COMMENT ON TABLE billing.add_on_taxes IS 'The taxes of an add-on''s items when the item names none (before the customer''s and the billing entity''s).';
COMMENT ON COLUMN billing.fees.add_on_id IS 'The add-on a one-off item bills (NULL otherwise).';
COMMENT ON COLUMN billing.fees.tax_ids IS 'Taxes named for this fee (a one-off item''s or its add-on''s), which replace the precedence of charge, plan, customer and billing entity; NULL: by precedence.';
COMMENT ON FUNCTION billing.create_add_on(text, text, numeric, text, text) IS 'Creates an add-on: code (unique), name, default amount (0 or more, with the currency''s decimals), currency, description. 22023 bad input, 23505 existing code.';
COMMENT ON FUNCTION billing.create_one_off_invoice(text, jsonb) IS 'An invoice of one-off items for a customer, finalized at once: items [{"add_on_code"?, "description"?, "units"? (1), "unit_amount"?, "tax_codes"?}], an add-on giving the default description and unit amount; taxes: the item''s, else its add-on''s, else the customer''s, else the entity''s. 23503 unknown customer, add-on or tax; 22023 bad items or an add-on in another currency.';
COMMENT ON TYPE billing.credit_note_reason IS 'Why a credit note was issued: duplicated_charge, product_unsatisfactory, order_change, order_cancellation, fraudulent_charge or other.';
COMMENT ON TYPE billing.credit_status IS 'available (credit left for later invoices), consumed (none left) or voided (given up).';
COMMENT ON TABLE billing.credit_notes IS 'Credit notes of finalized invoices, numbered <invoice number>-CN<n>: items total (before tax), taxes, total = refund + credit, balance_amount (credit left for later invoices), credit_status.';
COMMENT ON TABLE billing.credit_note_items IS 'What a credit note credits of each fee, before tax; never more than the fee less its coupon share less earlier credit notes.';
COMMENT ON TABLE billing.credit_note_taxes IS 'Each tax a credit note gives back: the items'' exact tax (item x rate) and the amount, rounded on the running sum of the invoice''s credit notes so that crediting everything gives back the invoice''s taxes.';
COMMENT ON TABLE billing.invoice_credit_notes IS 'The credit each invoice consumed at finalization, per credit note (oldest first, after tax, before prepaid credits).';
COMMENT ON FUNCTION billing.create_credit_note(bigint, jsonb, text, numeric, numeric, text) IS 'Credits a finalized invoice: items [{"fee_id", "amount"}] before tax, at most what is left creditable of each fee (23514); taxes in proportion; refund (a paid invoice only, 55000) + credit (default: the rest) = total. 23503 unknown invoice or fee, 22023 bad items, reason or amounts, 55000 invoice not finalized.';
COMMENT ON FUNCTION billing.void_credit_note(bigint) IS 'Gives up what is left of a credit note''s credit. 23503 unknown credit note, 55000 no credit left.';
COMMENT ON FUNCTION billing._creditable(bigint, bigint) IS 'Private: what is left creditable of each invoiced fee of an invoice (before tax).';
COMMENT ON FUNCTION billing._apply_credit_notes(billing.invoices) IS 'Private: consumes the customer''s available credit notes, oldest first, on an invoice being finalized, up to its sub-total including taxes; returns whether any was used.';
COMMENT ON VIEW billing_bi.credit_notes IS 'One row per credit note: number, invoice number, customer, reason, currency, totals before and with tax, refund, credit, the credit left and its status.';
COMMENT ON FUNCTION billing._credit_unused_days(billing.subscriptions, billing.customers, bigint, timestamptz, date) IS 'Private: once per base fee paid in advance whose plan ended early (termination, upgrade), a credit note for its unused days (plan amount / period days x days, less the coupon share, with taxes, at most what is left creditable).';
COMMENT ON TABLE billing.usage_thresholds IS 'Progressive billing: the usage thresholds of a plan version (amount; recurring or not, at most one recurring), compared by the billing run with each subscription''s lifetime usage amount.';
COMMENT ON TABLE billing.applied_usage_thresholds IS 'Each threshold level a subscription crossed, known by kind (recurring) and level (a fixed threshold''s amount, or the highest fixed amount plus a multiple of the recurring one), with the lifetime usage amount then and the progressive-billing invoice it issued.';
COMMENT ON COLUMN billing.fees.progressive_credit_amount IS 'On a subscription invoice''s usage fee: what the period''s progressive-billing invoices billed of this usage line, deducted before coupons and tax (at most the fee).';
COMMENT ON FUNCTION billing.set_usage_thresholds(text, jsonb) IS 'Replaces the usage thresholds of a plan''s current version: [{"amount", "recurring"?, "name"?}], amounts with the currency''s decimals, at most one recurring; returns how many. 23503 unknown plan, 22023 bad thresholds.';
COMMENT ON FUNCTION billing._lifetime_usage(billing.subscriptions, billing.customers, timestamptz, timestamptz) IS 'Private: a subscription''s lifetime usage amount: the usage of its subscription invoices before window_from (voided ones aside) plus the open period''s usage to as_of.';
COMMENT ON FUNCTION billing._bill_usage_thresholds(billing.subscriptions, billing.customers, timestamptz) IS 'Private: checks a subscription''s usage thresholds at as_of; if it crossed new levels, creates the progressive-billing invoice (the open period''s usage less what earlier ones billed) and records the levels; returns its id or NULL.';
COMMENT ON FUNCTION billing._credit_progressive_billing(bigint, bigint) IS 'Private: sets the progressive-billing credit of a subscription invoice''s usage fees: what the period''s progressive invoices billed of each line, at most the fee.';
COMMENT ON TABLE billing.fixed_charges IS 'Fixed charges of a plan version: units of an add-on no event measures, priced standard, graduated or volume (canonical JSON price), default units, in advance or in arrears, prorated or not.';
COMMENT ON TABLE billing.subscription_fixed_charge_units IS 'A subscription''s own units of a fixed charge from effective_at on (the latest at or before an instant is in force); before any, the plan''s default.';
COMMENT ON FUNCTION billing.add_fixed_charge(text, text, text, jsonb, numeric, boolean, boolean) IS 'Adds a fixed charge to a plan''s current version: an add-on''s units priced with standard, graduated or volume and its properties; default units, pay_in_advance, prorated. 23503 unknown plan or add-on, 22023 bad model, price, units or currency, 23505 the add-on is charged already.';
COMMENT ON FUNCTION billing.set_fixed_charge_units(text, text, numeric, timestamptz) IS 'Sets a subscription''s units of a fixed charge (by add-on code) from at on; a change during a period is prorated when the charge is. 23503 unknown subscription or fixed charge, 22023 bad units or instant.';
COMMENT ON FUNCTION billing._add_fixed_charge_fees(billing.subscriptions, billing.customers, bigint, boolean, date, date, timestamptz, timestamptz, text) IS 'Private: the fees of a subscription''s fixed charges paid in advance or in arrears for one period: units in force (or, prorated, each count weighted by its days over the period''s days), priced, with the add-on''s taxes.';
COMMENT ON FUNCTION billing._fixed_charge_units(bigint, bigint, bigint, timestamptz) IS 'Private: a subscription''s own units of a fixed charge set at or before an instant, oldest first.';
COMMENT ON FUNCTION billing._customer(text) IS 'Private: the customer with this external id, or 23503.';
COMMENT ON FUNCTION billing._plan_version(text) IS 'Private: the current (latest) version of the plan with this code, or 23503.';
COMMENT ON FUNCTION billing._invoice_taxes_amount(bigint, bigint, text) IS 'Private: an invoice''s tax total from its fees'' taxes, each tax''s exact sum rounded once to the currency.';
COMMENT ON TYPE billing.plan_change_kind IS 'A plan change: upgrade (the new plan costs at least as much per year; effective at once) or downgrade (effective at the end of the current period).';
COMMENT ON TABLE billing.plan_changes IS 'Each change of a subscription''s plan: from effective_at on it is billed on to_plan_version_id; pending until that instant (billing.cancel_plan_change removes it).';
COMMENT ON COLUMN billing.subscription_directory.plan_version_ids IS 'Every plan version the subscription is billed on (past, current and pending): ingestion keeps the event properties any of them splits usage by.';
COMMENT ON FUNCTION billing.change_plan(text, text, timestamptz) IS 'Moves a subscription to another plan''s current version: an upgrade (yearly-equivalent amount at least the old one''s) at `at`, billed at once when it has happened, with a credit note for an in-advance fee''s unused days; a downgrade at the end of the current period, pending until then. Replaces a pending change. 23503 unknown subscription or plan; 22023 same plan, other currency, bad instant; 55000 terminated at or before `at`, or `at` within an invoiced period or before the last change.';
COMMENT ON FUNCTION billing.cancel_plan_change(text) IS 'Cancels a subscription''s pending plan change (the latest) and returns it. 23503 unknown subscription, 55000 nothing pending or the change invoiced already.';
COMMENT ON FUNCTION billing._plan_segments(billing.subscriptions) IS 'Private: the plans of a subscription, oldest first, each with the instant it took effect and the next one''s (pending ones included).';
COMMENT ON FUNCTION billing._in_force(billing.subscriptions, timestamptz) IS 'Private: the subscription row with the plan version in force at an instant, and the instant that plan took effect.';
COMMENT ON FUNCTION billing._yearly_amount(billing.plan_versions) IS 'Private: a plan''s amount per year (weekly x 52, monthly x 12, quarterly x 4, semiannual x 2), which decides upgrade or downgrade.';
COMMENT ON FUNCTION billing._apply_plan_changes(timestamptz, bigint, bigint) IS 'Private: points subscriptions and the directory at the plan of the latest change whose instant has come (never ahead of now); returns how many changed.';
COMMENT ON FUNCTION billing._note_plan_versions(billing.subscriptions) IS 'Private: records in the directory every plan version a subscription is billed on, for ingestion.';
COMMENT ON FUNCTION billing._bill_plan_periods(billing.subscriptions, billing.customers, bigint, timestamptz, timestamptz, boolean, date, timestamptz, timestamptz, timestamptz) IS 'Private: bills the periods of one plan of a subscription for the time it was in force (through the day before a change), on the invoices of their billing instants.';
COMMENT ON VIEW billing_bi.plan_changes IS 'One row per plan change: subscription, customer, upgrade or downgrade, the plans and versions on both sides, the instant it takes effect, pending or effective.';
COMMENT ON FUNCTION billing._credit_ended_plans(billing.subscriptions, billing.customers, timestamptz[], bigint[], timestamptz) IS 'Private: the credit notes for the unused days of plans paid in advance that ended early by as_of (upgrades, a termination); once per fee.';
COMMENT ON TABLE billing.in_advance_usage IS 'Charges paid in advance: per subscription, charge, filter (0: the default bucket), pricing group and period, the units so far, the high-water mark billed, the events, the amount billed, what the latest event raised the mark by and billed, and (models priced per event) the values billed; its row lock orders concurrent events of one line.';
COMMENT ON FUNCTION billing._check_pay_in_advance(integer, billing.billable_metrics, text) IS 'Private: raises 22023 unless a charge paid in advance prices a count or sum metric that resets every period.';
COMMENT ON FUNCTION billing._in_advance_invoice(billing.subscriptions, billing.customers) IS 'Private: the subscription''s draft pay_in_advance invoice of the current customer-local day (billed at its end; after that one was finalized, one of the instant it is needed), locked, created if needed, and whether it was.';
COMMENT ON FUNCTION billing._bill_in_advance(bigint[], bigint[], bigint[], timestamptz[], numeric[], jsonb[], bigint[], numeric[]) IS 'Private: called by ingestion, as the extension''s owner, for the events just stored of charges paid in advance (with the plan version when the subscription has one): each bills price(high-water mark after) - price(before) on its subscription''s day invoice.';
COMMENT ON FUNCTION billing._bucket_units(billing.subscriptions, billing.customers, bigint, timestamptz, timestamptz) IS 'Private: a charge''s units per filter and pricing group in a window, as billing._metric_units counts them (a recurring metric from its beginning; with the instant before from_ts as to_ts, the units carried into it).';
COMMENT ON FUNCTION billing._bill_carried_in_advance(billing.subscriptions, billing.customers, bigint, timestamptz, timestamptz, date, date, timestamptz) IS 'Private: at the start of a period or plan, the recurring charges paid in advance bill the price of the units carried in (the full period, or prorated from that instant) and start the period''s lines from them; with no invoice, says whether there is anything to bill.';
COMMENT ON FUNCTION billing._price_rise(billing.price, text, integer, numeric, numeric, boolean) IS 'Private: what raising a line''s mark bills: price(after) - price(before) (price(after) for a first event), each mark rounded as the metric rounds units, never below 0.';
COMMENT ON FUNCTION billing._units_rise(text, integer, numeric, numeric) IS 'Private: by how many units, rounded as the metric rounds them, a line''s mark rose.';

-- BEGIN prepaid credits
ALTER TYPE billing.invoice_type ADD VALUE 'credit';
ALTER TYPE billing.fee_type ADD VALUE 'credit';
ALTER TABLE billing.subscription_directory ADD COLUMN realtime boolean NOT NULL DEFAULT false;

-- Prepaid credits: wallets of credits per customer, an append-only ledger of what came in
-- and went out, top-ups (manual, on an interval, at a threshold), consumption by invoices
-- at finalization, direct deduction by applications, and spend caps checked before usage
-- is recorded (billing.authorize).
--
-- A wallet's balance (credits_balance) moves only with its ledger: billing._apply_to_balance
-- applies each settled row to it in the same transaction, counting the posting (postings),
-- and the wallet refuses a change of its balance that counts none; billing.wallet_discrepancies()
-- lists wallets whose balance and settled ledger sum differ (none, ever). The balance never
-- goes below zero: the row lock of the update orders concurrent consumers, and each sees
-- what the one before it left. (Functions, not triggers, keep the balance: on Citus a
-- trigger runs on a worker, where it could neither update another shard's rows of the
-- transaction nor announce an event.)

CREATE TYPE billing.wallet_status AS ENUM ('active', 'terminated');
CREATE TYPE billing.wallet_transaction_type AS ENUM ('inbound', 'outbound');
CREATE TYPE billing.wallet_transaction_status AS ENUM ('pending', 'settled', 'failed');
-- What a ledger row is: inbound purchased (paid), granted (free), restored (given back by a
-- voided invoice); outbound invoiced (paid an invoice), deducted (billing.deduct_credits),
-- consumed (burned down by usage as it was ingested, one row per wallet and day), voided
-- (taken away), expired (left at the wallet's expiry).
CREATE TYPE billing.wallet_transaction_kind AS ENUM ('purchased', 'granted', 'restored', 'invoiced', 'deducted', 'consumed', 'voided', 'expired');
CREATE TYPE billing.wallet_top_up_source AS ENUM ('manual', 'interval', 'threshold');
CREATE TYPE billing.top_up_trigger AS ENUM ('interval', 'threshold');
CREATE TYPE billing.top_up_method AS ENUM ('fixed', 'target');

CREATE TABLE billing.wallets (
    id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id bigint NOT NULL REFERENCES billing.customers,
    -- The wallet's name for applications (billing.deduct_credits), unique across customers
    -- through billing.wallet_directory.
    external_id text NOT NULL,
    code text NOT NULL,
    name text,
    currency text NOT NULL,
    -- 1 credit = rate_amount units of the currency.
    rate_amount numeric NOT NULL CHECK (rate_amount > 0),
    -- Lower first when invoices consume credits.
    priority integer NOT NULL DEFAULT 50 CHECK (priority BETWEEN 1 AND 50),
    status billing.wallet_status NOT NULL DEFAULT 'active',
    expiration_at timestamptz,
    -- Limits (NULL: none): the fee types and the metrics whose fees the wallet may pay.
    applies_to_fee_types billing.fee_type[],
    applies_to_metric_ids bigint[],
    paid_top_up_min_credits numeric,
    paid_top_up_max_credits numeric,
    -- Purchased credits settle when their invoice is paid (true) or finalized (false).
    invoice_requires_successful_payment boolean NOT NULL DEFAULT false,
    -- Real-time burn-down: ingestion takes the price of each event of a usage charge from
    -- the wallet as it stores the event (billing._burn).
    burn_down boolean NOT NULL DEFAULT false,
    credits_balance numeric NOT NULL DEFAULT 0 CONSTRAINT wallets_never_overdrawn CHECK (credits_balance >= 0),
    -- How many ledger postings moved the balance (each moves it once).
    postings bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    terminated_at timestamptz,
    PRIMARY KEY (customer_id, id),
    UNIQUE (customer_id, code),
    UNIQUE (customer_id, external_id),
    CHECK (paid_top_up_min_credits IS NULL OR paid_top_up_max_credits IS NULL OR paid_top_up_min_credits <= paid_top_up_max_credits)
);

-- Which customer's wallet an external wallet id names: the one place that id is unique.
CREATE TABLE billing.wallet_directory (
    external_id text PRIMARY KEY,
    customer_id bigint NOT NULL,
    wallet_id bigint NOT NULL,
    UNIQUE (customer_id, wallet_id)
);

-- The ledger. Rows are never deleted; a pending row (purchased credits waiting for their
-- invoice) becomes settled or failed once, and nothing else of a row ever changes.
CREATE TABLE billing.wallet_transactions (
    id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id bigint NOT NULL,
    wallet_id bigint NOT NULL,
    transaction_type billing.wallet_transaction_type NOT NULL,
    transaction_status billing.wallet_transaction_kind NOT NULL,
    status billing.wallet_transaction_status NOT NULL,
    source billing.wallet_top_up_source NOT NULL DEFAULT 'manual',
    credits numeric NOT NULL CHECK (credits > 0),
    -- The credits' worth in the wallet's currency, in whole minor units.
    amount numeric NOT NULL CHECK (amount >= 0),
    -- The credit-purchase invoice of purchased credits; the invoice paid (invoiced) or voided
    -- (restored).
    invoice_id bigint,
    idempotency_key text,
    reason text,
    metadata jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    settled_at timestamptz,
    PRIMARY KEY (customer_id, id),
    CONSTRAINT wallet_transactions_idempotency_key UNIQUE (customer_id, wallet_id, idempotency_key),
    FOREIGN KEY (customer_id, wallet_id) REFERENCES billing.wallets (customer_id, id),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES billing.invoices (customer_id, id),
    CHECK ((transaction_type = 'inbound') = (transaction_status IN ('purchased', 'granted', 'restored'))),
    CHECK ((status = 'settled') = (settled_at IS NOT NULL))
);
CREATE INDEX wallet_transactions_by_invoice ON billing.wallet_transactions (customer_id, invoice_id) WHERE invoice_id IS NOT NULL;

-- Automatic top-ups: on an interval from started_at, or when the wallet's ongoing balance
-- falls to threshold_credits (once per crossing: the rule is armed again when the ongoing
-- balance is above the threshold). fixed tops up paid_credits and granted_credits; target
-- buys what brings the ongoing balance up to target_ongoing_balance.
CREATE TABLE billing.wallet_recurring_rules (
    id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id bigint NOT NULL,
    wallet_id bigint NOT NULL,
    trigger billing.top_up_trigger NOT NULL,
    method billing.top_up_method NOT NULL DEFAULT 'fixed',
    "interval" billing.billing_interval,
    started_at timestamptz,
    threshold_credits numeric,
    paid_credits numeric NOT NULL DEFAULT 0 CHECK (paid_credits >= 0),
    granted_credits numeric NOT NULL DEFAULT 0 CHECK (granted_credits >= 0),
    target_ongoing_balance numeric,
    armed boolean NOT NULL DEFAULT true,
    last_fired_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, id),
    FOREIGN KEY (customer_id, wallet_id) REFERENCES billing.wallets (customer_id, id),
    CHECK ((trigger = 'interval') = ("interval" IS NOT NULL AND started_at IS NOT NULL)),
    CHECK ((trigger = 'threshold') = (threshold_credits IS NOT NULL)),
    CHECK ((method = 'target') = (target_ongoing_balance IS NOT NULL))
);

-- A subscription's hard spend cap: the most its usage may cost in one billing period
-- (billing.authorize refuses usage beyond it). reached_period_from records the period for
-- which spend_cap.reached was announced.
CREATE TABLE billing.spend_caps (
    customer_id bigint NOT NULL,
    subscription_id bigint NOT NULL,
    -- NULL: no cap (only the prepaid balance is enforced).
    amount numeric CHECK (amount >= 0),
    -- Ingestion itself refuses events beyond the cap or the prepaid balance (23514).
    enforce_on_ingestion boolean NOT NULL DEFAULT false,
    reached_period_from timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, subscription_id),
    CHECK (amount IS NOT NULL OR enforce_on_ingestion)
);

-- What burn-down took from each wallet for each line of usage (the line of
-- billing.in_advance_usage whose marks price it), and what of it an invoice counted as paid:
-- at the finalization of the line's period, up to the line's fee; the rest goes back.
CREATE TABLE billing.burned_usage (
    customer_id bigint NOT NULL,
    subscription_id bigint NOT NULL,
    charge_id bigint NOT NULL,
    charge_filter_id bigint NOT NULL,
    grouped_by jsonb NOT NULL,
    period_from timestamptz NOT NULL,
    wallet_id bigint NOT NULL,
    credits numeric NOT NULL,
    amount numeric NOT NULL,
    invoice_id bigint,
    applied_amount numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (customer_id, subscription_id, charge_id, charge_filter_id, grouped_by, period_from, wallet_id),
    FOREIGN KEY (customer_id, wallet_id) REFERENCES billing.wallets (customer_id, id)
);
CREATE INDEX burned_usage_by_invoice ON billing.burned_usage (customer_id, invoice_id) WHERE invoice_id IS NOT NULL;

-- Applies a settled ledger row to its wallet's balance (23514, naming the balance, if an
-- outbound row would overdraw it). Spending (an invoice, a deduction) that empties a wallet
-- announces wallet.depleted; a top-up, wallet.topped_up.
-- A burn-down day row applies what it grew by (`credits`).
CREATE FUNCTION billing._apply_to_balance(posted billing.wallet_transactions, credits numeric DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    delta numeric := CASE posted.transaction_type WHEN 'inbound' THEN 1 ELSE -1 END * coalesce(credits, posted.credits);
    balance numeric;
    w billing.wallets;
BEGIN
    UPDATE billing.wallets wl SET credits_balance = wl.credits_balance + delta, postings = wl.postings + 1
    WHERE wl.customer_id = posted.customer_id AND wl.id = posted.wallet_id AND wl.credits_balance + delta >= 0
    RETURNING wl.credits_balance INTO balance;
    IF NOT FOUND THEN
        SELECT * INTO w FROM billing.wallets wl WHERE wl.customer_id = posted.customer_id AND wl.id = posted.wallet_id;
        PERFORM billing._raise('23514', format('wallet %s has %s credits: taking %s would overdraw it', w.external_id,
                                               trim_scale(w.credits_balance), trim_scale(-delta)),
            format('balance %s credits (%s %s), asked %s credits', trim_scale(w.credits_balance),
                   billing._credits_worth(w.credits_balance, w.rate_amount, w.currency), w.currency, trim_scale(-delta)),
            'top the wallet up with billing.top_up, or take at most its balance');
    END IF;
    IF delta > 0 THEN
        PERFORM billing._emit(posted.customer_id, 'wallet.topped_up', billing._wallet_event(posted.customer_id, posted.wallet_id)
                                                                      || jsonb_build_object('credits', posted.credits, 'transaction_id', posted.id));
    ELSIF balance = 0 AND posted.transaction_status IN ('invoiced', 'deducted', 'consumed') THEN
        PERFORM billing._emit(posted.customer_id, 'wallet.depleted', billing._wallet_event(posted.customer_id, posted.wallet_id));
    END IF;
END $$;

-- Append-only: a pending row may settle or fail, once; a burn-down day row grows; nothing
-- else changes.
CREATE FUNCTION billing._wallet_transaction_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.status = 'pending' AND NEW.status <> 'pending'
       AND (to_jsonb(NEW) - ARRAY['status', 'settled_at']) = (to_jsonb(OLD) - ARRAY['status', 'settled_at']) THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.transaction_status = 'consumed' AND NEW.credits > OLD.credits
       AND (to_jsonb(NEW) - ARRAY['credits', 'amount']) = (to_jsonb(OLD) - ARRAY['credits', 'amount']) THEN
        RETURN NEW;
    END IF;
    PERFORM billing._raise('55000', format('wallet transaction %s is part of the ledger and cannot be changed', OLD.id),
        format('%s of a %s transaction', TG_OP, OLD.status),
        'correct a wallet with a new transaction: billing.top_up, billing.void_credits');
    RETURN NULL;
END $$;
CREATE TRIGGER wallet_transactions_immutable BEFORE UPDATE OR DELETE ON billing.wallet_transactions
FOR EACH ROW EXECUTE FUNCTION billing._wallet_transaction_immutable();

-- A wallet's balance changes only with a ledger posting (billing._apply_to_balance counts it).
CREATE FUNCTION billing._wallet_balance_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.credits_balance IS DISTINCT FROM OLD.credits_balance AND NEW.postings IS DISTINCT FROM OLD.postings + 1 THEN
        PERFORM billing._raise('55000', format('wallet %s''s balance moves only with its ledger', OLD.external_id),
            format('credits_balance set from %s to %s', OLD.credits_balance, NEW.credits_balance),
            'use billing.top_up, billing.deduct_credits or billing.void_credits');
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER wallets_balance_guard BEFORE UPDATE ON billing.wallets
FOR EACH ROW EXECUTE FUNCTION billing._wallet_balance_guard();

-- Credits' worth in the wallet's currency, in whole minor units (half-up): 1,034 credits at
-- 0.001 are 1.03.
CREATE FUNCTION billing._credits_worth(credits numeric, rate_amount numeric, currency text) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT billing.round_money(credits * rate_amount, currency)
$$;

-- A wallet's ongoing balance in credits: its balance less the credits its share of usage not
-- yet invoiced (billing._ongoing_usage) would take.
CREATE FUNCTION billing._ongoing_credits(credits_balance numeric, rate_amount numeric, usage_amount numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT trim_scale(greatest(credits_balance - round(coalesce(usage_amount, 0) / rate_amount, 5), 0))
$$;

-- What a wallet can pay, in whole minor units: its balance's worth rounded down, so that
-- paying it never takes more credits than the wallet holds.
CREATE FUNCTION billing._spendable(credits_balance numeric, rate_amount numeric, currency text) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    SELECT trunc(credits_balance * rate_amount, billing.currency_minor_units(currency))
$$;

-- The credits an amount of currency takes from a wallet.
CREATE FUNCTION billing._credits_for(amount numeric, credits_balance numeric, rate_amount numeric) RETURNS numeric
LANGUAGE sql IMMUTABLE AS $$
    -- Rounded up at the 25th decimal, so that the credits taken are worth at least the amount
    -- (a rate such as 0.003 divides into endless decimals); never more than the balance.
    SELECT least(credits_balance, trim_scale(ceil(round(amount, 30) / rate_amount * 1e25) * 1e-25))
$$;

-- Whether a wallet may pay a fee of this type and metric (its limits).
CREATE FUNCTION billing._wallet_pays(
    applies_to_fee_types billing.fee_type[], applies_to_metric_ids bigint[], fee_type billing.fee_type, metric_id bigint
) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT (applies_to_fee_types IS NULL OR fee_type = ANY (applies_to_fee_types))
       AND (applies_to_metric_ids IS NULL OR metric_id = ANY (applies_to_metric_ids))
$$;

CREATE FUNCTION billing._wallet_event(customer_id bigint, wallet_id bigint) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
BEGIN
    RETURN (SELECT jsonb_build_object('wallet_id', w.id, 'external_id', w.external_id, 'code', w.code,
                                      'customer_external_id', c.external_id, 'credits_balance', w.credits_balance,
                                      'balance_amount', billing._credits_worth(w.credits_balance, w.rate_amount, w.currency), 'currency', w.currency)
            FROM billing.wallets w JOIN billing.customers c ON c.id = w.customer_id
            WHERE w.customer_id = customer_id AND w.id = wallet_id);
END $$;

-- The wallet with this external id, locked, or 23503.
CREATE FUNCTION billing._wallet(external_id text) RETURNS billing.wallets
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    entry billing.wallet_directory;
    found_wallet billing.wallets;
BEGIN
    SELECT * INTO entry FROM billing.wallet_directory d WHERE d.external_id = external_id;
    SELECT * INTO found_wallet FROM billing.wallets w WHERE w.customer_id = entry.customer_id AND w.id = entry.wallet_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM billing._unknown('wallet', external_id, 'create it with billing.create_wallet');
    END IF;
    RETURN found_wallet;
END $$;

-- Raises 55000 unless the wallet takes transactions (active, not past its expiry).
CREATE FUNCTION billing._require_active(w billing.wallets, action text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
BEGIN
    IF w.status = 'terminated' OR w.expiration_at <= now() THEN
        PERFORM billing._raise('55000', format('wallet %s is %s', w.external_id,
                                               CASE w.status WHEN 'terminated' THEN 'terminated' ELSE 'expired' END),
            format('%s on a wallet %s', action, CASE w.status WHEN 'terminated' THEN format('terminated at %s', w.terminated_at)
                                                                 ELSE format('that expired at %s', w.expiration_at) END),
            'create a new wallet with billing.create_wallet');
    END IF;
END $$;

-- A positive, finite number of credits, or 22023.
CREATE FUNCTION billing._check_credits(what text, credits numeric, may_be_zero boolean) RETURNS numeric
LANGUAGE plpgsql IMMUTABLE AS $$
#variable_conflict use_variable
BEGIN
    IF credits IS NULL OR NOT (credits > 0 OR (may_be_zero AND credits = 0)) OR credits >= 'Infinity' THEN
        PERFORM billing._invalid(format('%s must be %s number of credits', what, CASE WHEN may_be_zero THEN 'a finite, non-negative' ELSE 'a positive, finite' END),
            format('got %s', credits), format('give %s as a number such as 100 or 12.5', what));
    END IF;
    RETURN credits;
END $$;

-- Writes a ledger row for a wallet (its amount the credits' worth unless given).
CREATE FUNCTION billing._post(
    w billing.wallets, kind billing.wallet_transaction_kind, status billing.wallet_transaction_status, credits numeric,
    source billing.wallet_top_up_source DEFAULT 'manual', invoice_id bigint DEFAULT NULL, amount numeric DEFAULT NULL,
    reason text DEFAULT NULL, metadata jsonb DEFAULT '{}'
) RETURNS billing.wallet_transactions
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    posted billing.wallet_transactions;
BEGIN
    INSERT INTO billing.wallet_transactions (customer_id, wallet_id, transaction_type, transaction_status, status, source, credits, amount,
                                             invoice_id, reason, metadata, settled_at)
    VALUES (w.customer_id, w.id, CASE WHEN kind IN ('purchased', 'granted', 'restored') THEN 'inbound' ELSE 'outbound' END::billing.wallet_transaction_type,
            kind, status, source, credits, coalesce(amount, billing._credits_worth(credits, w.rate_amount, w.currency)), invoice_id, reason, coalesce(metadata, '{}'),
            CASE WHEN status = 'settled' THEN now() END)
    RETURNING * INTO posted;
    IF status = 'settled' THEN
        PERFORM billing._apply_to_balance(posted);
    END IF;
    RETURN posted;
END $$;

-- Paid and granted credits into a wallet: granted ones settle at once; paid ones are billed
-- on a credit-purchase invoice (finalized at once) and settle with it (billing._settle_purchase).
CREATE FUNCTION billing._top_up(
    w billing.wallets, paid_credits numeric, granted_credits numeric, source billing.wallet_top_up_source, metadata jsonb
) RETURNS SETOF billing.wallet_transactions
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    cust billing.customers;
    invoice_id bigint;
    purchase billing.wallet_transactions;
    inv billing.invoices;
    at timestamptz := now();
BEGIN
    IF granted_credits > 0 THEN
        RETURN NEXT billing._post(w, 'granted', 'settled', granted_credits, source, metadata => metadata);
    END IF;
    IF paid_credits > 0 THEN
        SELECT * INTO cust FROM billing.customers c WHERE c.id = w.customer_id;
        INSERT INTO billing.invoices (customer_id, invoice_type, billing_entity_id, currency, timezone, billing_at, issuing_date)
        VALUES (cust.id, 'credit', cust.billing_entity_id, w.currency, cust.timezone, at, (at AT TIME ZONE cust.timezone)::date)
        RETURNING id INTO invoice_id;
        -- Credits are not taxed: the fee names no tax.
        INSERT INTO billing.fees (customer_id, invoice_id, fee_type, fee_key, description, units, precise_unit_amount, precise_amount,
                                  amount, from_datetime, to_datetime, tax_ids)
        VALUES (cust.id, invoice_id, 'credit', format('credit:%s', invoice_id), format('Prepaid credits (%s)', coalesce(w.name, w.code)),
                paid_credits, w.rate_amount, paid_credits * w.rate_amount, billing._credits_worth(paid_credits, w.rate_amount, w.currency), at, at, '{}');
        purchase := billing._post(w, 'purchased', 'pending', paid_credits, source, invoice_id, metadata => metadata);
        -- Its totals are its one fee's: no tax, coupon, credit note or prepaid credit applies.
        UPDATE billing.invoices i
        SET fees_amount = fee.amount, sub_total_excluding_taxes = fee.amount, sub_total_including_taxes = fee.amount, total_amount = fee.amount
        FROM (SELECT billing._credits_worth(paid_credits, w.rate_amount, w.currency) AS amount) fee
        WHERE i.customer_id = cust.id AND i.id = invoice_id
        RETURNING i.* INTO inv;
        PERFORM billing._emit(cust.id, 'invoice.created', billing._invoice_event(inv));
        PERFORM billing._finalize(inv);
        RETURN QUERY SELECT * FROM billing.wallet_transactions t WHERE t.customer_id = cust.id AND t.id = purchase.id;
    END IF;
END $$;

-- Settles (or fails) the purchased credits of a credit-purchase invoice: at finalization,
-- unless the wallet waits for the payment; on a successful payment (a failed payment leaves
-- them pending: a retried one settles them); failed by a voided invoice, or when their
-- wallet ended before they settled.
CREATE FUNCTION billing._settle_purchase(inv billing.invoices) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    settled billing.wallet_transactions;
    -- (A variable, not now() in the CASE: Citus evaluates no volatile function in a CASE of
    -- a statement on its shards.)
    settled_now timestamptz := now();
BEGIN
    IF inv.invoice_type <> 'credit' THEN
        RETURN;
    END IF;
    FOR settled IN
    UPDATE billing.wallet_transactions t
    SET status = CASE WHEN inv.status = 'voided' OR w.status = 'terminated' THEN 'failed' ELSE 'settled' END::billing.wallet_transaction_status,
        settled_at = CASE WHEN inv.status = 'voided' OR w.status = 'terminated' THEN NULL ELSE settled_now END
    FROM billing.wallets w
    WHERE t.customer_id = inv.customer_id AND t.invoice_id = inv.id AND t.transaction_status = 'purchased' AND t.status = 'pending'
      AND w.customer_id = t.customer_id AND w.id = t.wallet_id
      AND (inv.status = 'voided' OR inv.payment_status = 'succeeded' OR NOT w.invoice_requires_successful_payment)
    RETURNING t.*
    LOOP
        IF settled.status = 'settled' THEN
            PERFORM billing._apply_to_balance(settled);
        END IF;
    END LOOP;
END $$;

-- Whether ingestion prices a subscription's events as it stores them: its customer has an
-- active wallet burned down in real time, or its cap is enforced at ingestion.
CREATE FUNCTION billing._realtime(customer_id bigint, subscription_id bigint) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
BEGIN
    RETURN EXISTS (SELECT 1 FROM billing.wallets w WHERE w.customer_id = customer_id AND w.burn_down AND w.status = 'active')
        OR EXISTS (SELECT 1 FROM billing.spend_caps sc
                   WHERE sc.customer_id = customer_id AND sc.subscription_id = subscription_id AND sc.enforce_on_ingestion);
END $$;

-- Keeps the directory's realtime flag of a customer's subscriptions in step.
CREATE FUNCTION billing._refresh_realtime(customer_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    entry record;
    flag boolean;
BEGIN
    FOR entry IN SELECT d.subscription_id, d.realtime FROM billing.subscription_directory d WHERE d.customer_id = customer_id ORDER BY 1 LOOP
        flag := billing._realtime(customer_id, entry.subscription_id);
        CONTINUE WHEN flag = entry.realtime;
        UPDATE billing.subscription_directory d SET realtime = flag WHERE d.customer_id = customer_id AND d.subscription_id = entry.subscription_id;
    END LOOP;
END $$;

-- Real-time burn-down: takes `amount` (the price an event added to a line of usage) from the
-- customer's burn-down wallets that may pay the metric, by priority, each up to its balance,
-- into one consumed ledger row per wallet and (customer-local) day, and records it against
-- the line (billing.burned_usage). Returns what it took.
CREATE FUNCTION billing._burn(
    sub billing.subscriptions, cust billing.customers, charge_id bigint, metric_id bigint, filter_id bigint, grouped jsonb,
    period_from timestamptz, amount numeric
) RETURNS numeric
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w billing.wallets;
    left_to_take numeric := amount;
    credits numeric;
    taken numeric;
    day date := (now() AT TIME ZONE cust.timezone)::date;
    posted billing.wallet_transactions;
BEGIN
    -- Locked in id order, as every lock of a customer's wallets is taken, then read by priority.
    PERFORM 1 FROM billing.wallets wl WHERE wl.customer_id = sub.customer_id AND wl.burn_down AND wl.status = 'active' ORDER BY wl.id FOR UPDATE;
    FOR w IN
        SELECT * FROM billing.wallets wl
        WHERE wl.customer_id = sub.customer_id AND wl.burn_down AND wl.status = 'active' AND wl.currency = cust.currency
          AND (wl.expiration_at IS NULL OR wl.expiration_at > now())
        ORDER BY wl.priority, wl.created_at, wl.id
    LOOP
        EXIT WHEN left_to_take <= 0;
        CONTINUE WHEN w.credits_balance <= 0 OR NOT billing._wallet_pays(w.applies_to_fee_types, w.applies_to_metric_ids, 'charge', metric_id);
        credits := billing._credits_for(left_to_take, w.credits_balance, w.rate_amount);
        taken := least(left_to_take, credits * w.rate_amount);
        INSERT INTO billing.wallet_transactions AS t (customer_id, wallet_id, transaction_type, transaction_status, status, credits, amount,
                                                      idempotency_key, reason, settled_at)
        VALUES (w.customer_id, w.id, 'outbound', 'consumed', 'settled', credits, billing._credits_worth(credits, w.rate_amount, w.currency),
                'pg_billing burn-down ' || day, format('usage of %s burned down as ingested', day), now())
        ON CONFLICT ON CONSTRAINT wallet_transactions_idempotency_key DO UPDATE
        SET credits = t.credits + excluded.credits, amount = billing._credits_worth(t.credits + excluded.credits, w.rate_amount, w.currency)
        RETURNING * INTO posted;
        PERFORM billing._apply_to_balance(posted, credits);
        INSERT INTO billing.burned_usage AS b (customer_id, subscription_id, charge_id, charge_filter_id, grouped_by, period_from, wallet_id,
                                               credits, amount)
        VALUES (sub.customer_id, sub.id, charge_id, filter_id, grouped, period_from, w.id, credits, taken)
        ON CONFLICT ON CONSTRAINT burned_usage_pkey DO UPDATE SET credits = b.credits + excluded.credits, amount = b.amount + excluded.amount;
        left_to_take := left_to_take - taken;
    END LOOP;
    RETURN amount - left_to_take;
END $$;

-- Locks a subscription's spend cap row and its customer's active wallets (in id order), the
-- order every spend check takes them in; returns the cap (none: NULL).
CREATE FUNCTION billing._lock_spend_control(customer_id bigint, subscription_id bigint) RETURNS billing.spend_caps
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    cap billing.spend_caps;
BEGIN
    SELECT * INTO cap FROM billing.spend_caps sc WHERE sc.customer_id = customer_id AND sc.subscription_id = subscription_id FOR UPDATE;
    PERFORM 1 FROM billing.wallets wl WHERE wl.customer_id = customer_id AND wl.status = 'active' ORDER BY wl.id FOR UPDATE;
    RETURN cap;
END $$;

-- Raises 23514: a subscription's usage this period would pass its cap.
CREATE FUNCTION billing._over_cap(external_subscription_id text, spent numeric, cap numeric, currency text, detail text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM billing._raise('23514', format('subscription %s would spend %s %s of its %s %s cap this period', external_subscription_id,
                                           billing.round_money(spent, currency), currency, cap, currency),
        detail, 'raise the cap with billing.set_spend_cap, or wait for the next period');
END $$;

-- Ingestion refusing what a subscription's spend control forbids (its cap enforced at
-- ingestion): after its events were stored and priced, 23514 (the whole call fails) when
-- its usage this period passes the cap, when burn-down could not take an event's price
-- (`short`), or when its customer's wallets do not cover the usage not yet invoiced they may
-- pay. The cap and the wallets are locked first, so concurrent ingestions take turns and
-- each sees what the one before committed.
CREATE FUNCTION billing._enforce_spend(customer_id bigint, subscription_id bigint, short numeric) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    cap billing.spend_caps;
    sub billing.subscriptions;
    spent numeric;
    uncovered numeric;
    currency text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM billing.spend_caps sc
                   WHERE sc.customer_id = customer_id AND sc.subscription_id = subscription_id AND sc.enforce_on_ingestion) THEN
        RETURN;
    END IF;
    SELECT * INTO cap FROM billing._lock_spend_control(customer_id, subscription_id);
    SELECT * INTO sub FROM billing.subscriptions s WHERE s.customer_id = customer_id AND s.id = subscription_id;
    SELECT c.currency INTO currency FROM billing.customers c WHERE c.id = customer_id;
    SELECT coalesce(sum(u.amount), 0) INTO spent FROM billing.current_usage(sub.external_id) u;
    IF spent > cap.amount THEN
        PERFORM billing._over_cap(sub.external_id, spent, cap.amount, currency, 'its cap is enforced at ingestion: the events were refused');
    END IF;
    IF short > 0 THEN
        PERFORM billing._raise('23514', format('the burn-down wallets of subscription %s''s customer do not cover %s %s of its events',
                                               sub.external_id, short, currency),
            'its spend is enforced at ingestion: the events were refused', 'top the customer''s wallet up with billing.top_up');
    END IF;
    SELECT coalesce(sum(u.usage_amount), 0) INTO uncovered FROM billing._ongoing_usage(customer_id) u WHERE u.wallet_id IS NULL;
    IF uncovered > 0 THEN
        PERFORM billing._raise('23514', format('the prepaid balance of subscription %s''s customer does not cover its usage: %s %s short',
                                               sub.external_id, billing.round_money(uncovered, currency), currency),
            'its spend is enforced at ingestion: the events were refused', 'top the customer''s wallet up with billing.top_up');
    END IF;
END $$;

CREATE FUNCTION billing.create_wallet(
    customer text, code text, rate_amount numeric DEFAULT 1, name text DEFAULT NULL, priority integer DEFAULT 50,
    expiration_at timestamptz DEFAULT NULL, applies_to jsonb DEFAULT NULL,
    paid_top_up_min_credits numeric DEFAULT NULL, paid_top_up_max_credits numeric DEFAULT NULL,
    invoice_requires_successful_payment boolean DEFAULT false, burn_down boolean DEFAULT false,
    paid_credits numeric DEFAULT 0, granted_credits numeric DEFAULT 0, external_id text DEFAULT NULL
) RETURNS billing.wallets
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    cust billing.customers := billing._customer(customer);
    fee_types billing.fee_type[];
    metric_ids bigint[];
    created billing.wallets;
BEGIN
    IF coalesce(btrim(code), '') = '' THEN
        PERFORM billing._invalid('a wallet needs a code', format('got "%s"', code), 'billing.create_wallet(''acme'', ''main'')');
    END IF;
    IF rate_amount IS NULL OR NOT (rate_amount > 0 AND rate_amount < 'Infinity') THEN
        PERFORM billing._invalid('rate_amount must be positive: 1 credit is worth rate_amount of the currency',
            format('got %s', rate_amount), 'give 1 for credits worth one unit each, 0.001 for a thousandth');
    END IF;
    IF priority IS NULL OR priority NOT BETWEEN 1 AND 50 THEN
        PERFORM billing._invalid('priority must be between 1 and 50 (lower pays first)', format('got %s', priority), 'leave the default, 50');
    END IF;
    IF expiration_at <= now() THEN
        PERFORM billing._invalid('expiration_at must be in the future', format('got %s', expiration_at), 'give a later instant, or NULL');
    END IF;
    PERFORM billing._check_credits('paid_top_up_min_credits', coalesce(paid_top_up_min_credits, 0), true);
    PERFORM billing._check_credits('paid_top_up_max_credits', coalesce(paid_top_up_max_credits, 1), false);
    IF paid_top_up_min_credits > paid_top_up_max_credits THEN
        PERFORM billing._invalid('paid_top_up_min_credits is above paid_top_up_max_credits',
            format('got %s and %s', paid_top_up_min_credits, paid_top_up_max_credits), 'give a minimum at most the maximum');
    END IF;
    IF applies_to IS NOT NULL THEN
        IF jsonb_typeof(applies_to) <> 'object' OR EXISTS (SELECT 1 FROM jsonb_object_keys(applies_to) k WHERE k NOT IN ('fee_types', 'billable_metric_codes'))
           OR jsonb_typeof(coalesce(applies_to -> 'fee_types', '[]')) <> 'array'
           OR jsonb_typeof(coalesce(applies_to -> 'billable_metric_codes', '[]')) <> 'array' THEN
            PERFORM billing._invalid('applies_to must be {"fee_types": [...], "billable_metric_codes": [...]}', format('got %s', applies_to),
                'write {"billable_metric_codes": ["tokens"]} or {"fee_types": ["charge"]}');
        END IF;
        IF jsonb_array_length(coalesce(applies_to -> 'fee_types', '[0]')) = 0
           OR jsonb_array_length(coalesce(applies_to -> 'billable_metric_codes', '[0]')) = 0 THEN
            PERFORM billing._invalid('applies_to lists at least one fee type or metric in each list it gives', format('got %s', applies_to),
                'leave applies_to NULL for a wallet that pays everything');
        END IF;
        IF applies_to ? 'fee_types' THEN
            PERFORM billing._check_label('fee type', t, enum_range(NULL::billing.fee_type)::text[])
            FROM jsonb_array_elements_text(applies_to -> 'fee_types') t;
            SELECT array_agg(DISTINCT t::billing.fee_type) INTO fee_types FROM jsonb_array_elements_text(applies_to -> 'fee_types') t;
        END IF;
        IF applies_to ? 'billable_metric_codes' THEN
            PERFORM billing._unknown('metric', c, 'create it with billing.create_billable_metric')
            FROM jsonb_array_elements_text(applies_to -> 'billable_metric_codes') c
            WHERE NOT EXISTS (SELECT 1 FROM billing.billable_metrics m WHERE m.code = c);
            SELECT array_agg(DISTINCT m.id) INTO metric_ids FROM jsonb_array_elements_text(applies_to -> 'billable_metric_codes') c
            JOIN billing.billable_metrics m ON m.code = c;
        END IF;
    END IF;
    external_id := coalesce(external_id, customer || '/' || code);
    IF EXISTS (SELECT 1 FROM billing.wallet_directory d WHERE d.external_id = external_id)
       OR EXISTS (SELECT 1 FROM billing.wallets w WHERE w.customer_id = cust.id AND w.code = code) THEN
        PERFORM billing._raise('23505', format('wallet "%s" exists already', external_id),
            format('customer %s, code %s', customer, code), 'give the wallet another code or external_id');
    END IF;
    INSERT INTO billing.wallets (customer_id, external_id, code, name, currency, rate_amount, priority, expiration_at, applies_to_fee_types,
                                 applies_to_metric_ids, paid_top_up_min_credits, paid_top_up_max_credits, invoice_requires_successful_payment,
                                 burn_down)
    VALUES (cust.id, external_id, code, name, cust.currency, rate_amount, priority, expiration_at, fee_types, metric_ids,
            paid_top_up_min_credits, paid_top_up_max_credits, invoice_requires_successful_payment, coalesce(burn_down, false))
    RETURNING * INTO created;
    INSERT INTO billing.wallet_directory (external_id, customer_id, wallet_id) VALUES (external_id, cust.id, created.id);
    IF created.burn_down THEN
        PERFORM billing._refresh_realtime(cust.id);
    END IF;
    PERFORM billing._emit(cust.id, 'wallet.created', billing._wallet_event(cust.id, created.id));
    IF coalesce(paid_credits, 0) <> 0 OR coalesce(granted_credits, 0) <> 0 THEN
        PERFORM billing.top_up(external_id, paid_credits, granted_credits);
    END IF;
    SELECT * INTO created FROM billing.wallets w WHERE w.customer_id = cust.id AND w.id = created.id;
    RETURN created;
END $$;

-- A manual top-up: paid credits (billed, within the wallet's paid top-up limits) and
-- granted credits (free). Returns the ledger rows written.
CREATE FUNCTION billing.top_up(wallet text, paid_credits numeric DEFAULT 0, granted_credits numeric DEFAULT 0, metadata jsonb DEFAULT '{}')
RETURNS SETOF billing.wallet_transactions
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w billing.wallets := billing._wallet(wallet);
BEGIN
    PERFORM billing._require_active(w, 'a top-up');
    PERFORM billing._check_credits('paid_credits', paid_credits, true);
    PERFORM billing._check_credits('granted_credits', granted_credits, true);
    IF paid_credits = 0 AND granted_credits = 0 THEN
        PERFORM billing._invalid('a top-up needs paid or granted credits', 'got 0 and 0', 'give paid_credits, granted_credits or both');
    END IF;
    IF paid_credits > 0 AND (paid_credits < w.paid_top_up_min_credits OR paid_credits > w.paid_top_up_max_credits) THEN
        PERFORM billing._invalid(format('wallet %s takes paid top-ups of %s to %s credits', w.external_id,
                                        coalesce(w.paid_top_up_min_credits::text, '0'), coalesce(w.paid_top_up_max_credits::text, 'any number of')),
            format('got %s', paid_credits), 'give paid_credits within the wallet''s limits');
    END IF;
    IF paid_credits > 0 AND billing._credits_worth(paid_credits, w.rate_amount, w.currency) = 0 THEN
        PERFORM billing._invalid(format('%s paid credits are worth less than the smallest amount of %s', paid_credits, w.currency),
            format('rate %s', w.rate_amount), 'buy more credits, or grant them');
    END IF;
    RETURN QUERY SELECT * FROM billing._top_up(w, paid_credits, granted_credits, 'manual', metadata);
END $$;

-- Takes credits away (an outbound voided row).
CREATE FUNCTION billing.void_credits(wallet text, credits numeric, reason text DEFAULT NULL)
RETURNS billing.wallet_transactions
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w billing.wallets := billing._wallet(wallet);
BEGIN
    PERFORM billing._check_credits('credits', credits, false);
    RETURN billing._post(w, 'voided', 'settled', credits, reason => reason);
END $$;

-- Ends a wallet: what is left goes out as `kind` (voided when terminated, expired at the
-- expiry), pending purchases stay to settle or fail with their invoice, rules stop.
CREATE FUNCTION billing._end_wallet(w billing.wallets, kind billing.wallet_transaction_kind, at timestamptz) RETURNS billing.wallets
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    ended billing.wallets;
BEGIN
    IF w.credits_balance > 0 THEN
        PERFORM billing._post(w, kind, 'settled', w.credits_balance);
    END IF;
    DELETE FROM billing.wallet_recurring_rules r WHERE r.customer_id = w.customer_id AND r.wallet_id = w.id;
    UPDATE billing.wallets wl SET status = 'terminated', terminated_at = at
    WHERE wl.customer_id = w.customer_id AND wl.id = w.id RETURNING * INTO ended;
    IF w.burn_down THEN
        PERFORM billing._refresh_realtime(w.customer_id);
    END IF;
    PERFORM billing._emit(w.customer_id, CASE kind WHEN 'expired' THEN 'wallet.expired' ELSE 'wallet.terminated' END,
                          billing._wallet_event(w.customer_id, w.id) || jsonb_build_object('credits_left', w.credits_balance));
    RETURN ended;
END $$;

CREATE FUNCTION billing.terminate_wallet(wallet text) RETURNS billing.wallets
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w billing.wallets := billing._wallet(wallet);
BEGIN
    IF w.status = 'terminated' THEN
        RETURN w;
    END IF;
    RETURN billing._end_wallet(w, 'voided', now());
END $$;

-- Deducts credits for an application, in the caller's transaction. The idempotency key
-- makes a replay return the first deduction (23505 if it asked for another number of
-- credits); a deduction that would overdraw the wallet raises 23514 naming the balance.
-- Security definer: billing_writer may call it without any right on the ledger.
CREATE FUNCTION billing.deduct_credits(wallet text, credits numeric, idempotency_key text, reason text DEFAULT NULL)
RETURNS billing.wallet_transactions
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    entry billing.wallet_directory;
    posted billing.wallet_transactions;
    w billing.wallets;
BEGIN
    PERFORM billing._check_credits('credits', credits, false);
    IF coalesce(idempotency_key, '') = '' THEN
        PERFORM billing._invalid('a deduction needs an idempotency key', 'got an empty key',
            'give the id of the request the credits pay for, so that a retry deducts nothing again');
    END IF;
    IF idempotency_key LIKE 'pg_billing burn-down %' THEN
        PERFORM billing._invalid('idempotency keys starting with "pg_billing burn-down " are reserved', format('got %s', idempotency_key),
            'use the id of the request the credits pay for');
    END IF;
    SELECT * INTO entry FROM billing.wallet_directory d WHERE d.external_id = wallet;
    IF NOT FOUND THEN
        PERFORM billing._unknown('wallet', wallet, 'create it with billing.create_wallet');
    END IF;
    SELECT * INTO w FROM billing.wallets wl WHERE wl.customer_id = entry.customer_id AND wl.id = entry.wallet_id;
    -- (VALUES computed beforehand: Citus cannot return the no row of a conflicting
    -- INSERT ... SELECT.)
    IF w.status = 'active' AND (w.expiration_at IS NULL OR w.expiration_at > now()) THEN
        INSERT INTO billing.wallet_transactions AS t (customer_id, wallet_id, transaction_type, transaction_status, status, credits, amount,
                                                      idempotency_key, reason, settled_at)
        VALUES (w.customer_id, w.id, 'outbound', 'deducted', 'settled', credits, billing._credits_worth(credits, w.rate_amount, w.currency),
                idempotency_key, reason, now())
        ON CONFLICT ON CONSTRAINT wallet_transactions_idempotency_key DO NOTHING
        RETURNING * INTO posted;
    END IF;
    IF posted.id IS NOT NULL THEN
        PERFORM billing._apply_to_balance(posted);
    ELSE
        SELECT * INTO posted FROM billing.wallet_transactions t
        WHERE t.customer_id = entry.customer_id AND t.wallet_id = entry.wallet_id AND t.idempotency_key = idempotency_key;
        IF NOT FOUND THEN
            PERFORM billing._require_active(w, 'a deduction');
        ELSIF posted.credits <> credits THEN
            PERFORM billing._raise('23505', format('idempotency key "%s" deducted %s credits, not %s', idempotency_key, trim_scale(posted.credits), credits),
                format('wallet %s, transaction %s', wallet, posted.id), 'a retry asks for the same credits; a new deduction needs a new key');
        END IF;
        RETURN posted;
    END IF;
    IF EXISTS (SELECT 1 FROM billing.wallet_recurring_rules r WHERE r.customer_id = entry.customer_id AND r.trigger = 'threshold') THEN
        PERFORM billing._check_threshold_rules(entry.customer_id);
    END IF;
    RETURN posted;
END $$;

-- Takes up to `cap` from lines of usage or fees (their types, metrics and amounts left),
-- only those the wallet may pay, in order: returns what it took and the lines' amounts left.
-- A wallet without limits takes `cap` whatever the lines add up to (they only say which
-- fees later limited wallets may still pay).
CREATE FUNCTION billing._take_from_lines(
    w billing.wallets, line_types billing.fee_type[], line_metrics bigint[], INOUT line_left numeric[], cap numeric, OUT taken numeric
)
LANGUAGE plpgsql IMMUTABLE AS $$
#variable_conflict use_variable
DECLARE
    limited boolean := w.applies_to_fee_types IS NOT NULL OR w.applies_to_metric_ids IS NOT NULL;
    rest numeric;
    part numeric;
BEGIN
    IF limited THEN
        SELECT coalesce(sum(l.amount_left), 0) INTO rest FROM unnest(line_types, line_metrics, line_left) l(fee_type, metric_id, amount_left)
        WHERE billing._wallet_pays(w.applies_to_fee_types, w.applies_to_metric_ids, l.fee_type, l.metric_id);
        taken := least(cap, billing.round_money(rest, w.currency));
    ELSE
        taken := cap;
    END IF;
    rest := taken;
    FOR n IN 1 .. coalesce(cardinality(line_left), 0) LOOP
        EXIT WHEN rest <= 0;
        CONTINUE WHEN NOT billing._wallet_pays(w.applies_to_fee_types, w.applies_to_metric_ids, line_types[n], line_metrics[n]) OR line_left[n] <= 0;
        part := least(rest, line_left[n]);
        line_left[n] := line_left[n] - part;
        rest := rest - part;
    END LOOP;
END $$;

-- Gives credits back to a wallet (a restored row), unless it ended meanwhile.
CREATE FUNCTION billing._restore(customer_id bigint, wallet_id bigint, credits numeric, amount numeric, invoice_id bigint, reason text)
RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w billing.wallets;
BEGIN
    SELECT * INTO w FROM billing.wallets wl WHERE wl.customer_id = customer_id AND wl.id = wallet_id FOR UPDATE;
    IF w.status = 'active' THEN
        PERFORM billing._post(w, 'restored', 'settled', credits, invoice_id => invoice_id, amount => amount, reason => reason);
    END IF;
END $$;

-- What burn-down took for the usage a finalizing subscription invoice bills counts as paid
-- (before the wallets pay the rest): for each of its usage fees, up to the fee (less its
-- progressive-billing credit and coupon share), in whole minor units, and up to what is left
-- to pay. What burn-down took beyond that, and for lines of its usage window that the invoice
-- does not bill, goes back to the wallets (restored). Returns whether any counted.
CREATE FUNCTION billing._apply_burned_credits(inv billing.invoices) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    burned record;
    left_to_pay numeric;
    fee_left numeric;
    last_fee bigint;
    applied numeric;
    applied_any boolean := false;
BEGIN
    IF inv.invoice_type <> 'subscription' OR inv.charges_from IS NULL THEN
        RETURN false;
    END IF;
    SELECT i.total_amount INTO left_to_pay FROM billing.invoices i WHERE i.customer_id = inv.customer_id AND i.id = inv.id;
    FOR burned IN
        SELECT b.charge_id, b.charge_filter_id, b.grouped_by, b.period_from, b.wallet_id, b.credits, b.amount, fe.id AS fee_id,
               billing.round_money(fe.amount - fe.progressive_credit_amount - fe.precise_coupons_amount, inv.currency) AS fee_net
        FROM billing.burned_usage b
        LEFT JOIN billing.fees fe ON fe.customer_id = b.customer_id AND fe.invoice_id = inv.id AND fe.fee_type = 'charge' AND fe.invoiceable
         AND fe.charge_id = b.charge_id AND coalesce(fe.charge_filter_id, 0) = b.charge_filter_id
         AND coalesce(fe.grouped_by, '{}'::jsonb) = b.grouped_by AND fe.from_datetime = b.period_from
        WHERE b.customer_id = inv.customer_id AND b.subscription_id = inv.subscription_id AND b.invoice_id IS NULL
          AND b.period_from >= inv.charges_from AND b.period_from <= inv.charges_to
        ORDER BY fe.id, b.wallet_id
    LOOP
        IF burned.fee_id IS NULL THEN
            fee_left := 0;
        ELSIF burned.fee_id IS DISTINCT FROM last_fee THEN
            fee_left := burned.fee_net;
            last_fee := burned.fee_id;
        END IF;
        applied := greatest(least(trunc(burned.amount, billing.currency_minor_units(inv.currency)), fee_left, left_to_pay), 0);
        fee_left := fee_left - applied;
        left_to_pay := left_to_pay - applied;
        UPDATE billing.burned_usage b SET invoice_id = inv.id, applied_amount = applied
        WHERE b.customer_id = inv.customer_id AND b.subscription_id = inv.subscription_id AND b.charge_id = burned.charge_id
          AND b.charge_filter_id = burned.charge_filter_id AND b.grouped_by = burned.grouped_by AND b.period_from = burned.period_from
          AND b.wallet_id = burned.wallet_id;
        applied_any := applied_any OR applied > 0;
        CONTINUE WHEN burned.amount <= applied;
        PERFORM billing._restore(inv.customer_id, burned.wallet_id, trim_scale(round(burned.credits * (burned.amount - applied) / burned.amount, 10)),
                                 billing.round_money(burned.amount - applied, inv.currency), inv.id,
                                 format('burned down beyond what invoice %s bills', inv.id));
    END LOOP;
    RETURN applied_any;
END $$;

-- Prepaid credits pay a finalizing invoice (pricing.md, invoice arithmetic 6): what is left
-- after credit notes, from the customer's active wallets in the invoice's currency by
-- priority, each within its limits (the fees' tax-inclusive amounts it may pay) and its
-- balance. Credit-purchase invoices are paid in money. Returns whether any wallet paid.
CREATE FUNCTION billing._apply_prepaid_credits(inv billing.invoices) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w billing.wallets;
    left_to_pay numeric;
    line_types billing.fee_type[];
    line_metrics bigint[];
    line_left numeric[];
    pay numeric;
    paid_any boolean := false;
BEGIN
    IF inv.invoice_type = 'credit' THEN
        RETURN false;
    END IF;
    PERFORM 1 FROM billing.wallets wl WHERE wl.customer_id = inv.customer_id AND wl.status = 'active' AND wl.currency = inv.currency
    ORDER BY wl.id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT i.total_amount INTO left_to_pay FROM billing.invoices i WHERE i.customer_id = inv.customer_id AND i.id = inv.id;
    SELECT array_agg(f.fee_type ORDER BY f.id), array_agg(f.metric_id ORDER BY f.id), array_agg(f.amount_left ORDER BY f.id)
    INTO line_types, line_metrics, line_left
    FROM (SELECT fe.id, fe.fee_type, ch.billable_metric_id AS metric_id,
                 fe.amount - fe.progressive_credit_amount - fe.precise_coupons_amount
                 + coalesce((SELECT sum(ft.precise_amount) FROM billing.fee_taxes ft WHERE ft.customer_id = fe.customer_id AND ft.fee_id = fe.id), 0)
                 -- What burn-down paid of the fee is paid.
                 - coalesce((SELECT sum(b.applied_amount) FROM billing.burned_usage b
                             WHERE b.customer_id = fe.customer_id AND b.invoice_id = fe.invoice_id AND b.charge_id = fe.charge_id
                               AND b.charge_filter_id = coalesce(fe.charge_filter_id, 0) AND b.grouped_by = coalesce(fe.grouped_by, '{}'::jsonb)
                               AND b.period_from = fe.from_datetime), 0)
                 AS amount_left
          FROM billing.fees fe LEFT JOIN billing.charges ch ON ch.id = fe.charge_id
          WHERE fe.customer_id = inv.customer_id AND fe.invoice_id = inv.id AND fe.invoiceable) f;
    FOR w IN
        SELECT * FROM billing.wallets wl
        WHERE wl.customer_id = inv.customer_id AND wl.status = 'active' AND wl.currency = inv.currency AND wl.credits_balance > 0
          AND (wl.expiration_at IS NULL OR wl.expiration_at > now())
        ORDER BY wl.priority, wl.created_at, wl.id
    LOOP
        EXIT WHEN left_to_pay <= 0;
        SELECT t.line_left, t.taken INTO line_left, pay FROM billing._take_from_lines(w, line_types, line_metrics, line_left,
                                                                                      least(left_to_pay, billing._spendable(w.credits_balance, w.rate_amount, w.currency))) t;
        CONTINUE WHEN pay <= 0;
        PERFORM billing._post(w, 'invoiced', 'settled', billing._credits_for(pay, w.credits_balance, w.rate_amount), invoice_id => inv.id, amount => pay);
        left_to_pay := left_to_pay - pay;
        paid_any := true;
    END LOOP;
    RETURN paid_any;
END $$;

-- The prepaid credits an invoice consumed, in currency: what wallets paid at its
-- finalization and what burn-down had taken for its usage.
CREATE FUNCTION billing._prepaid_credits_paid(customer_id bigint, invoice_id bigint) RETURNS numeric
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
DECLARE
    paid numeric;
BEGIN
    SELECT coalesce(sum(t.amount), 0) + coalesce((SELECT sum(b.applied_amount) FROM billing.burned_usage b
                                                  WHERE b.customer_id = customer_id AND b.invoice_id = invoice_id), 0)
    INTO paid FROM billing.wallet_transactions t
    WHERE t.customer_id = customer_id AND t.invoice_id = invoice_id AND t.transaction_status = 'invoiced' AND t.status = 'settled';
    RETURN paid;
END $$;

-- What voiding an invoice does to wallets: the credits it consumed, and what burn-down took
-- for the usage it counted as paid, come back (restored);
-- the credits a voided credit-purchase invoice bought fail if pending, or are taken away
-- again if they had settled (23514 if they were spent meanwhile).
CREATE FUNCTION billing._void_wallet_transactions(inv billing.invoices) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    consumed billing.wallet_transactions;
    burned record;
    w billing.wallets;
BEGIN
    FOR consumed IN
        SELECT * FROM billing.wallet_transactions t
        WHERE t.customer_id = inv.customer_id AND t.invoice_id = inv.id AND t.transaction_status = 'purchased' AND t.status = 'settled'
        ORDER BY t.id
    LOOP
        SELECT * INTO w FROM billing.wallets wl WHERE wl.customer_id = consumed.customer_id AND wl.id = consumed.wallet_id FOR UPDATE;
        PERFORM billing._post(w, 'voided', 'settled', consumed.credits, invoice_id => inv.id, amount => consumed.amount,
                              reason => format('credit purchase invoice %s voided', inv.number));
    END LOOP;
    PERFORM billing._settle_purchase(inv);
    FOR burned IN
        SELECT b.wallet_id, sum(b.credits * b.applied_amount / b.amount) AS credits, sum(b.applied_amount) AS amount
        FROM billing.burned_usage b WHERE b.customer_id = inv.customer_id AND b.invoice_id = inv.id AND b.applied_amount > 0
        GROUP BY 1 ORDER BY 1
    LOOP
        PERFORM billing._restore(inv.customer_id, burned.wallet_id, trim_scale(round(burned.credits, 10)), burned.amount, inv.id,
                                 format('invoice %s voided', inv.number));
    END LOOP;
    FOR consumed IN
        SELECT * FROM billing.wallet_transactions t
        WHERE t.customer_id = inv.customer_id AND t.invoice_id = inv.id AND t.transaction_status = 'invoiced' AND t.status = 'settled'
        ORDER BY t.id
    LOOP
        PERFORM billing._restore(inv.customer_id, consumed.wallet_id, consumed.credits, consumed.amount, inv.id, format('invoice %s voided', inv.number));
    END LOOP;
END $$;

-- What the customer's usage not yet paid for would take from each active wallet: the
-- current usage of its subscriptions' open periods (charges billed in arrears, less what
-- burn-down took for it) and the fees of its draft invoices, each line taken by priority
-- from the wallets that may pay it, each wallet up to its balance's worth. Amounts before
-- tax. A caller that has one subscription's current usage already gives it.
CREATE FUNCTION billing._ongoing_usage(customer_id bigint, known_subscription_id bigint DEFAULT NULL, known_lines billing.usage_line[] DEFAULT NULL)
RETURNS TABLE (wallet_id bigint, usage_amount numeric)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w billing.wallets;
    active_wallets billing.wallets[] := '{}';
    sub record;
    lines billing.usage_line[];
    line_types billing.fee_type[];
    line_metrics bigint[];
    line_left numeric[];
    burned_charges bigint[];
    burned_filters bigint[];
    burned_groups jsonb[];
    burned_periods timestamptz[];
    burned_amounts numeric[];
    taken numeric;
    uncovered numeric := 0;
BEGIN
    SELECT array_agg(f.fee_type), array_agg(f.metric_id), array_agg(f.unpaid)
    INTO line_types, line_metrics, line_left
    FROM (SELECT fe.fee_type, ch.billable_metric_id AS metric_id,
                 fe.amount - coalesce((SELECT sum(b.amount) FROM billing.burned_usage b
                                       WHERE b.customer_id = fe.customer_id AND b.subscription_id = fe.subscription_id AND b.invoice_id IS NULL
                                         AND b.charge_id = fe.charge_id AND b.charge_filter_id = coalesce(fe.charge_filter_id, 0)
                                         AND b.grouped_by = coalesce(fe.grouped_by, '{}'::jsonb) AND b.period_from = fe.from_datetime
                                         AND fe.fee_type = 'charge'), 0) AS unpaid
          FROM billing.invoices i
          JOIN billing.fees fe ON fe.customer_id = i.customer_id AND fe.invoice_id = i.id AND fe.invoiceable
          LEFT JOIN billing.charges ch ON ch.id = fe.charge_id
          WHERE i.customer_id = customer_id AND i.status = 'draft' AND i.invoice_type <> 'credit') f
    WHERE f.unpaid > 0;
    -- (Each subscription's usage on its own: on Citus, current usage reads the customer's
    -- shards and cannot run inside a query over them.) Usage already burned down is paid.
    FOR sub IN SELECT s.id, s.external_id FROM billing.subscriptions s WHERE s.customer_id = customer_id AND s.status = 'active' ORDER BY s.id LOOP
        SELECT array_agg(b.charge_id), array_agg(b.charge_filter_id), array_agg(b.grouped_by), array_agg(b.period_from), array_agg(b.amount)
        INTO burned_charges, burned_filters, burned_groups, burned_periods, burned_amounts
        FROM billing.burned_usage b WHERE b.customer_id = customer_id AND b.subscription_id = sub.id AND b.invoice_id IS NULL;
        IF sub.id = known_subscription_id THEN
            lines := known_lines;
        ELSE
            SELECT array_agg(u) INTO lines FROM billing.current_usage(sub.external_id) u;
        END IF;
        SELECT coalesce(line_types, '{}') || coalesce(array_agg('charge'::billing.fee_type), '{}'),
               coalesce(line_metrics, '{}') || coalesce(array_agg(ch.billable_metric_id), '{}'),
               coalesce(line_left, '{}') || coalesce(array_agg(u.unpaid), '{}')
        INTO line_types, line_metrics, line_left
        FROM (SELECT u.charge_id, u.amount - coalesce((SELECT sum(x.amount) FROM unnest(burned_charges, burned_filters, burned_groups, burned_periods, burned_amounts)
                                                              x(charge_id, filter_id, grouped_by, period_from, amount)
                                                       WHERE x.charge_id = u.charge_id AND x.filter_id = coalesce(u.filter_id, 0)
                                                         AND x.grouped_by = u.grouped_by AND x.period_from = u.from_datetime), 0) AS unpaid
              FROM unnest(lines) u) u
        JOIN billing.charges ch ON ch.id = u.charge_id
        WHERE NOT ch.pay_in_advance AND ch.invoiceable AND u.unpaid > 0;
    END LOOP;
    FOR w IN
        SELECT * FROM billing.wallets wl WHERE wl.customer_id = customer_id AND wl.status = 'active' ORDER BY wl.priority, wl.created_at, wl.id
    LOOP
        SELECT t.line_left, t.taken INTO line_left, taken
        FROM billing._take_from_lines(w, line_types, line_metrics, line_left,
                                      least(billing._spendable(w.credits_balance, w.rate_amount, w.currency), coalesce((SELECT sum(x) FROM unnest(line_left) x), 0))) t;
        active_wallets := active_wallets || w;
        wallet_id := w.id; usage_amount := taken;
        RETURN NEXT;
    END LOOP;
    -- And, with wallet_id NULL, the usage left that a wallet may pay but none covers.
    IF cardinality(active_wallets) > 0 THEN
        FOR n IN 1 .. coalesce(cardinality(line_left), 0) LOOP
            CONTINUE WHEN line_left[n] <= 0;
            FOREACH w IN ARRAY active_wallets LOOP
                IF billing._wallet_pays(w.applies_to_fee_types, w.applies_to_metric_ids, line_types[n], line_metrics[n]) THEN
                    uncovered := uncovered + line_left[n];
                    EXIT;
                END IF;
            END LOOP;
        END LOOP;
        wallet_id := NULL; usage_amount := uncovered;
        RETURN NEXT;
    END IF;
END $$;

-- What the customer's usage not yet paid would take from one wallet (billing._ongoing_usage).
CREATE FUNCTION billing._wallet_ongoing_usage(customer_id bigint, wallet_id bigint) RETURNS numeric
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    usage_amount numeric;
BEGIN
    SELECT coalesce(max(u.usage_amount), 0) INTO usage_amount FROM billing._ongoing_usage(customer_id) u WHERE u.wallet_id = wallet_id;
    RETURN usage_amount;
END $$;

-- A wallet's balance now, and its ongoing balance: the balance less what the customer's
-- usage not yet invoiced would take from it (billing._ongoing_usage).
CREATE FUNCTION billing.wallet_balance(wallet text)
RETURNS TABLE (external_id text, status text, currency text, rate_amount numeric, credits_balance numeric, balance_amount numeric,
               ongoing_usage_amount numeric, ongoing_balance_amount numeric, credits_ongoing_balance numeric)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    entry billing.wallet_directory;
    w billing.wallets;
BEGIN
    SELECT * INTO entry FROM billing.wallet_directory d WHERE d.external_id = wallet;
    SELECT * INTO w FROM billing.wallets wl WHERE wl.customer_id = entry.customer_id AND wl.id = entry.wallet_id;
    IF NOT FOUND THEN
        PERFORM billing._unknown('wallet', wallet, 'create it with billing.create_wallet');
    END IF;
    external_id := w.external_id; status := w.status; currency := w.currency; rate_amount := w.rate_amount;
    credits_balance := trim_scale(w.credits_balance);
    balance_amount := billing._credits_worth(w.credits_balance, w.rate_amount, w.currency);
    ongoing_usage_amount := billing._wallet_ongoing_usage(w.customer_id, w.id);
    ongoing_balance_amount := balance_amount - ongoing_usage_amount;
    credits_ongoing_balance := billing._ongoing_credits(w.credits_balance, w.rate_amount, ongoing_usage_amount);
    RETURN NEXT;
END $$;

-- Fires the customer's threshold rules whose wallet's ongoing balance is at or below the
-- threshold and that are armed (each fires once per crossing), and arms again those above.
CREATE FUNCTION billing._check_threshold_rules(customer_id bigint) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    rule record;
    ongoing numeric;
    fired integer := 0;
BEGIN
    FOR rule IN
        SELECT r.id, r.wallet_id, r.armed, r.threshold_credits, w.credits_balance, w.rate_amount
        FROM billing.wallet_recurring_rules r
        JOIN billing.wallets w ON w.customer_id = r.customer_id AND w.id = r.wallet_id AND w.status = 'active'
        WHERE r.customer_id = customer_id AND r.trigger = 'threshold'
        ORDER BY r.id
    LOOP
        ongoing := billing._ongoing_credits(rule.credits_balance, rule.rate_amount, billing._wallet_ongoing_usage(customer_id, rule.wallet_id));
        IF ongoing <= rule.threshold_credits AND rule.armed THEN
            UPDATE billing.wallet_recurring_rules r SET armed = false, last_fired_at = now() WHERE r.customer_id = customer_id AND r.id = rule.id;
            PERFORM billing._fire_rule(customer_id, rule.id, ongoing);
            fired := fired + 1;
        ELSIF ongoing > rule.threshold_credits AND NOT rule.armed THEN
            UPDATE billing.wallet_recurring_rules r SET armed = true WHERE r.customer_id = customer_id AND r.id = rule.id;
        END IF;
    END LOOP;
    RETURN fired;
END $$;

-- Tops a wallet up by one of its rules: fixed credits, or (target) the paid credits that
-- bring the ongoing balance to the target; paid credits within the wallet's paid top-up
-- limits (raised to the minimum, cut to the maximum).
CREATE FUNCTION billing._fire_rule(customer_id bigint, rule_id bigint, ongoing_credits numeric) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    rule billing.wallet_recurring_rules;
    w billing.wallets;
    paid numeric;
BEGIN
    SELECT * INTO rule FROM billing.wallet_recurring_rules r WHERE r.customer_id = customer_id AND r.id = rule_id;
    SELECT * INTO w FROM billing.wallets wl WHERE wl.customer_id = customer_id AND wl.id = rule.wallet_id FOR UPDATE;
    paid := CASE rule.method WHEN 'target' THEN greatest(rule.target_ongoing_balance - ongoing_credits, 0) ELSE rule.paid_credits END;
    IF paid > 0 THEN
        paid := least(greatest(paid, coalesce(w.paid_top_up_min_credits, paid)), coalesce(w.paid_top_up_max_credits, paid));
    END IF;
    IF billing._credits_worth(paid, w.rate_amount, w.currency) = 0 THEN
        paid := 0;
    END IF;
    PERFORM billing._top_up(w, paid, CASE rule.method WHEN 'fixed' THEN rule.granted_credits ELSE 0 END,
                            rule.trigger::text::billing.wallet_top_up_source, jsonb_build_object('rule_id', rule.id));
END $$;

-- A rule of automatic top-ups on a wallet. trigger 'interval' needs `interval` (weekly,
-- monthly, quarterly, semiannual, yearly) and fires at started_at plus each whole interval;
-- 'threshold' needs threshold_credits. method 'fixed' tops up paid_credits and
-- granted_credits; 'target' needs target_ongoing_balance.
CREATE FUNCTION billing.add_top_up_rule(
    wallet text, trigger text, method text DEFAULT 'fixed', paid_credits numeric DEFAULT 0, granted_credits numeric DEFAULT 0,
    "interval" text DEFAULT NULL, started_at timestamptz DEFAULT now(), threshold_credits numeric DEFAULT NULL,
    target_ongoing_balance numeric DEFAULT NULL
) RETURNS billing.wallet_recurring_rules
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w billing.wallets := billing._wallet(wallet);
    created billing.wallet_recurring_rules;
BEGIN
    PERFORM billing._require_active(w, 'a top-up rule');
    PERFORM billing._check_label('top-up trigger', trigger, enum_range(NULL::billing.top_up_trigger)::text[]);
    PERFORM billing._check_label('top-up method', method, enum_range(NULL::billing.top_up_method)::text[]);
    PERFORM billing._check_credits('paid_credits', paid_credits, true);
    PERFORM billing._check_credits('granted_credits', granted_credits, true);
    IF trigger = 'interval' THEN
        PERFORM billing._check_label('interval', "interval", enum_range(NULL::billing.billing_interval)::text[]);
        IF NOT (started_at > '-infinity' AND started_at < 'infinity') THEN
            PERFORM billing._invalid('an interval rule needs a finite started_at', format('got %s', started_at), 'leave the default, now()');
        END IF;
    ELSIF "interval" IS NOT NULL THEN
        PERFORM billing._invalid('a threshold rule takes no interval', format('got %s', "interval"), 'leave interval NULL');
    END IF;
    IF (trigger = 'threshold') <> (threshold_credits IS NOT NULL) THEN
        PERFORM billing._invalid('threshold_credits is for threshold rules, and they need it', format('got %s for a %s rule', threshold_credits, trigger),
            'give threshold_credits with trigger ''threshold'' only');
    END IF;
    IF threshold_credits IS NOT NULL THEN
        PERFORM billing._check_credits('threshold_credits', threshold_credits, true);
    END IF;
    IF method = 'target' THEN
        PERFORM billing._check_credits('target_ongoing_balance', target_ongoing_balance, false);
        IF paid_credits > 0 OR granted_credits > 0 THEN
            PERFORM billing._invalid('a target rule buys what reaches its target: it takes no paid or granted credits',
                format('got %s and %s', paid_credits, granted_credits), 'give target_ongoing_balance only');
        END IF;
    ELSIF target_ongoing_balance IS NOT NULL OR (paid_credits = 0 AND granted_credits = 0) THEN
        PERFORM billing._invalid('a fixed rule tops up paid_credits and granted_credits (not both 0) and has no target',
            format('got %s paid, %s granted, target %s', paid_credits, granted_credits, target_ongoing_balance),
            'give paid_credits or granted_credits');
    END IF;
    INSERT INTO billing.wallet_recurring_rules (customer_id, wallet_id, trigger, method, "interval", started_at, threshold_credits,
                                                paid_credits, granted_credits, target_ongoing_balance)
    VALUES (w.customer_id, w.id, trigger::billing.top_up_trigger, method::billing.top_up_method, "interval"::billing.billing_interval,
            CASE WHEN trigger = 'interval' THEN started_at END, threshold_credits, paid_credits, granted_credits, target_ongoing_balance)
    RETURNING * INTO created;
    IF trigger = 'threshold' THEN
        PERFORM billing._check_threshold_rules(w.customer_id);
        SELECT * INTO created FROM billing.wallet_recurring_rules r WHERE r.customer_id = w.customer_id AND r.id = created.id;
    END IF;
    RETURN created;
END $$;

CREATE FUNCTION billing.remove_top_up_rule(rule_id bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
BEGIN
    DELETE FROM billing.wallet_recurring_rules r WHERE r.id = rule_id;
    RETURN FOUND;
END $$;

-- The last instant at or before as_of at which an interval rule fires (started_at plus a
-- whole number, at least one, of intervals), NULL before the first.
CREATE FUNCTION billing._last_interval_instant("interval" billing.billing_interval, started_at timestamptz, as_of timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT max(started_at + n * step)
    FROM (SELECT CASE "interval" WHEN 'weekly' THEN interval '1 week' WHEN 'monthly' THEN interval '1 month'
                                 WHEN 'quarterly' THEN interval '3 months' WHEN 'semiannual' THEN interval '6 months'
                                 ELSE interval '1 year' END AS step) s,
         generate_series(1, greatest(0, ((extract(epoch FROM as_of - started_at) / 86400) / 7)::integer + 1)) n
    WHERE started_at + n * step <= as_of
$$;

-- Subscriptions whose usage of the open period reached their spend cap, announced once per
-- period (spend_cap.reached).
CREATE FUNCTION billing._announce_spend_caps(as_of timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    cap record;
    spent numeric;
    period_from timestamptz;
    announced integer := 0;
BEGIN
    FOR cap IN
        SELECT sc.customer_id, sc.subscription_id, sc.amount, sc.reached_period_from, s.external_id
        FROM billing.spend_caps sc JOIN billing.subscriptions s ON s.customer_id = sc.customer_id AND s.id = sc.subscription_id
        WHERE s.status = 'active'
    LOOP
        SELECT coalesce(sum(u.amount), 0), min(u.from_datetime) INTO spent, period_from FROM billing.current_usage(cap.external_id) u;
        CONTINUE WHEN spent < cap.amount OR cap.reached_period_from IS NOT DISTINCT FROM period_from;
        UPDATE billing.spend_caps sc SET reached_period_from = period_from
        WHERE sc.customer_id = cap.customer_id AND sc.subscription_id = cap.subscription_id;
        PERFORM billing._emit(cap.customer_id, 'spend_cap.reached',
            jsonb_build_object('external_subscription_id', cap.external_id, 'cap_amount', cap.amount, 'spent_amount', spent,
                               'period_from', period_from));
        announced := announced + 1;
    END LOOP;
    RETURN announced;
END $$;

-- The wallets' periodic work, as of an instant: expires wallets past their expiry, fires the
-- interval rules due (once per rule however many instants passed), checks the threshold
-- rules, and announces spend caps reached. Called by billing.run_billing and scheduled with
-- it; each wallet's work is in the caller's transaction.
CREATE FUNCTION billing.run_wallets(as_of timestamptz DEFAULT now())
RETURNS TABLE (expired integer, interval_top_ups integer, threshold_top_ups integer, spend_caps_reached integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    w billing.wallets;
    expiring record;
    rule record;
    customer bigint;
BEGIN
    expired := 0; interval_top_ups := 0; threshold_top_ups := 0;
    -- Found across customers, then each locked in its own customer's rows.
    FOR expiring IN SELECT wl.customer_id, wl.id FROM billing.wallets wl WHERE wl.status = 'active' AND wl.expiration_at <= as_of ORDER BY 1, 2 LOOP
        SELECT * INTO w FROM billing.wallets wl WHERE wl.customer_id = expiring.customer_id AND wl.id = expiring.id AND wl.status = 'active' FOR UPDATE;
        CONTINUE WHEN NOT FOUND;
        PERFORM billing._end_wallet(w, 'expired', w.expiration_at);
        expired := expired + 1;
    END LOOP;
    FOR rule IN
        SELECT r.customer_id, r.id, r.wallet_id, due.at FROM billing.wallet_recurring_rules r
        CROSS JOIN LATERAL (SELECT billing._last_interval_instant(r."interval", r.started_at, as_of) AS at) due
        WHERE r.trigger = 'interval' AND due.at IS NOT NULL AND due.at > coalesce(r.last_fired_at, '-infinity')
        ORDER BY r.customer_id, r.id
    LOOP
        UPDATE billing.wallet_recurring_rules r SET last_fired_at = rule.at WHERE r.customer_id = rule.customer_id AND r.id = rule.id;
        SELECT * INTO w FROM billing.wallets wl WHERE wl.customer_id = rule.customer_id AND wl.id = rule.wallet_id;
        PERFORM billing._fire_rule(rule.customer_id, rule.id, billing._ongoing_credits(w.credits_balance, w.rate_amount,
                                                                                      billing._wallet_ongoing_usage(w.customer_id, w.id)));
        interval_top_ups := interval_top_ups + 1;
    END LOOP;
    FOR customer IN SELECT DISTINCT r.customer_id FROM billing.wallet_recurring_rules r WHERE r.trigger = 'threshold' ORDER BY 1 LOOP
        threshold_top_ups := threshold_top_ups + billing._check_threshold_rules(customer);
    END LOOP;
    spend_caps_reached := billing._announce_spend_caps(as_of);
    RETURN NEXT;
END $$;

-- Sets a subscription's spend cap per billing period (NULL: none) and whether ingestion
-- itself enforces it and the prepaid balance; with neither, removes the row.
CREATE FUNCTION billing.set_spend_cap(external_subscription_id text, amount numeric, enforce_on_ingestion boolean DEFAULT false)
RETURNS billing.spend_caps
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    sub billing.subscriptions := billing._subscription(external_subscription_id);
    cap billing.spend_caps;
BEGIN
    IF amount IS NOT NULL AND (NOT (amount >= 0 AND amount < 'Infinity')
                               OR amount <> billing.round_money(amount, (SELECT c.currency FROM billing.customers c WHERE c.id = sub.customer_id))) THEN
        PERFORM billing._invalid('a spend cap is an amount of 0 or more in whole minor units of the currency', format('got %s', amount),
            'give the most a period''s usage may cost, such as 100.00');
    END IF;
    IF amount IS NULL AND NOT coalesce(enforce_on_ingestion, false) THEN
        DELETE FROM billing.spend_caps sc WHERE sc.customer_id = sub.customer_id AND sc.subscription_id = sub.id RETURNING * INTO cap;
    ELSE
        INSERT INTO billing.spend_caps AS sc (customer_id, subscription_id, amount, enforce_on_ingestion)
        VALUES (sub.customer_id, sub.id, amount, coalesce(enforce_on_ingestion, false))
        ON CONFLICT (customer_id, subscription_id) DO UPDATE SET amount = excluded.amount, enforce_on_ingestion = excluded.enforce_on_ingestion
        RETURNING * INTO cap;
    END IF;
    PERFORM billing._refresh_realtime(sub.customer_id);
    RETURN cap;
END $$;

-- The price of `quantity` more units of a metric on a subscription now (on each charge of
-- the plan in force that prices the metric: price(units + quantity) - price(units), units
-- being the open period's usage of the charge), or 23514 if it would take the period's usage
-- above the subscription's spend cap, or above what the customer's wallets that may pay it
-- hold beyond the usage not yet invoiced. Nothing is written; the subscription's cap and the
-- customer's wallets stay locked until the caller's transaction ends, so that the usage it
-- records next is seen by the next authorize (which waits): concurrent callers cannot
-- together pass a cap or a balance that each alone respects.
CREATE FUNCTION billing.authorize(external_subscription_id text, code text, quantity numeric) RETURNS numeric
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    sub billing.subscriptions := billing._subscription(external_subscription_id);
    metric billing.billable_metrics;
    currency text;
    price numeric := 0;
    spent numeric;
    cap numeric;
    available numeric;
    lines billing.usage_line[];
    ch record;
    has_wallets boolean;
    w billing.wallets;
    usage_wallets bigint[];
    usage_amounts numeric[];
BEGIN
    SELECT * INTO metric FROM billing.billable_metrics m WHERE m.code = code;
    IF NOT FOUND THEN
        PERFORM billing._unknown('metric', code, 'check the metric''s code');
    END IF;
    IF quantity IS NULL OR NOT (quantity >= 0 AND quantity < 'Infinity') THEN
        PERFORM billing._invalid('quantity must be a finite number of 0 or more', format('got %s', quantity), 'give the units the operation will use');
    END IF;
    IF sub.status = 'terminated' THEN
        PERFORM billing._raise('55000', format('subscription %s is terminated', external_subscription_id),
            format('terminated at %s', sub.terminated_at), 'authorize usage of an active subscription');
    END IF;
    -- The locks first: the usage read below is then the one their holders committed.
    cap := (billing._lock_spend_control(sub.customer_id, sub.id)).amount;
    has_wallets := EXISTS (SELECT 1 FROM billing.wallets wl WHERE wl.customer_id = sub.customer_id AND wl.status = 'active');
    SELECT array_agg(u) INTO lines FROM billing.current_usage(external_subscription_id) u;
    SELECT c.currency INTO currency FROM billing.customers c WHERE c.id = sub.customer_id;
    FOR ch IN
        SELECT c.id, c.price, c.price ->> 'charge_model' AS model, coalesce(sum(l.units), 0) AS units
        FROM billing.charges c LEFT JOIN unnest(lines) l ON l.charge_id = c.id
        WHERE c.id IN (SELECT l2.charge_id FROM unnest(lines) l2) AND c.billable_metric_id = metric.id AND c.invoiceable
        GROUP BY c.id, c.price
    LOOP
        IF ch.model IN ('percentage', 'dynamic') THEN
            PERFORM billing._raise('0A000', format('billing.authorize prices units, not the %s model', ch.model),
                format('charge %s of metric %s', ch.id, code), 'authorize metrics priced per unit (standard, graduated, volume, package, graduated_percentage)');
        END IF;
        price := price + billing._price_rise(ch.price::billing.price, metric.rounding_function::text, metric.rounding_precision,
                                             ch.units, ch.units + quantity, false);
    END LOOP;
    -- Compared exactly (many small prices that round to 0 still add up); returned rounded.
    IF price = 0 THEN
        RETURN 0;
    END IF;
    IF cap IS NOT NULL THEN
        SELECT coalesce(sum(l.amount), 0) INTO spent FROM unnest(lines) l;
        IF billing.round_money(spent + price, currency) > cap THEN
            PERFORM billing._over_cap(external_subscription_id, spent + price, cap, currency,
                                      format('spent %s, this usage %s (%s %s)', billing.round_money(spent, currency), billing.round_money(price, currency), quantity, code));
        END IF;
    END IF;
    IF has_wallets THEN
        SELECT array_agg(u.wallet_id), array_agg(u.usage_amount) INTO usage_wallets, usage_amounts
        FROM billing._ongoing_usage(sub.customer_id, sub.id, lines) u;
        available := 0;
        FOR w IN SELECT * FROM billing.wallets wl WHERE wl.customer_id = sub.customer_id AND wl.status = 'active' AND wl.currency = currency ORDER BY wl.id LOOP
            CONTINUE WHEN NOT billing._wallet_pays(w.applies_to_fee_types, w.applies_to_metric_ids, 'charge', metric.id);
            available := available + billing._spendable(w.credits_balance, w.rate_amount, w.currency)
                         - coalesce(usage_amounts[array_position(usage_wallets, w.id)], 0);
        END LOOP;
        IF price > available THEN
            PERFORM billing._raise('23514', format('the prepaid balance of %s %s does not cover %s %s', available, currency,
                                                   billing.round_money(price, currency), currency),
                format('%s %s on subscription %s', quantity, code, external_subscription_id),
                'top the customer''s wallet up with billing.top_up');
        END IF;
    END IF;
    RETURN billing.round_money(price, currency);
END $$;

-- Wallets whose balance differs from their settled ledger (the invariant: none).
CREATE FUNCTION billing.wallet_discrepancies()
RETURNS TABLE (external_id text, credits_balance numeric, settled_ledger_credits numeric)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN QUERY
    SELECT w.external_id, w.credits_balance, coalesce(l.credits, 0)
    FROM billing.wallets w
    LEFT JOIN (SELECT t.customer_id, t.wallet_id,
                      sum(CASE t.transaction_type WHEN 'inbound' THEN t.credits ELSE -t.credits END) AS credits
               FROM billing.wallet_transactions t WHERE t.status = 'settled' GROUP BY 1, 2) l
      ON l.customer_id = w.customer_id AND l.wallet_id = w.id
    WHERE w.credits_balance <> coalesce(l.credits, 0)
    ORDER BY w.external_id;
END $$;

REVOKE ALL ON FUNCTION billing._apply_to_balance(billing.wallet_transactions, numeric), billing._realtime(bigint, bigint), billing._refresh_realtime(bigint),
    billing._burn(billing.subscriptions, billing.customers, bigint, bigint, bigint, jsonb, timestamptz, numeric), billing._enforce_spend(bigint, bigint, numeric),
    billing._lock_spend_control(bigint, bigint), billing._over_cap(text, numeric, numeric, text, text),
    billing._apply_burned_credits(billing.invoices), billing._restore(bigint, bigint, numeric, numeric, bigint, text), billing._wallet_transaction_immutable(), billing._wallet_balance_guard(),
    billing._credits_worth(numeric, numeric, text), billing._ongoing_credits(numeric, numeric, numeric), billing._spendable(numeric, numeric, text), billing._credits_for(numeric, numeric, numeric),
    billing._wallet_pays(billing.fee_type[], bigint[], billing.fee_type, bigint), billing._wallet_event(bigint, bigint), billing._wallet(text),
    billing._require_active(billing.wallets, text), billing._check_credits(text, numeric, boolean),
    billing._post(billing.wallets, billing.wallet_transaction_kind, billing.wallet_transaction_status, numeric, billing.wallet_top_up_source, bigint, numeric, text, jsonb),
    billing._top_up(billing.wallets, numeric, numeric, billing.wallet_top_up_source, jsonb), billing._settle_purchase(billing.invoices),
    billing.create_wallet(text, text, numeric, text, integer, timestamptz, jsonb, numeric, numeric, boolean, boolean, numeric, numeric, text),
    billing.top_up(text, numeric, numeric, jsonb), billing.void_credits(text, numeric, text),
    billing._end_wallet(billing.wallets, billing.wallet_transaction_kind, timestamptz), billing.terminate_wallet(text),
    billing.deduct_credits(text, numeric, text, text),
    billing._take_from_lines(billing.wallets, billing.fee_type[], bigint[], numeric[], numeric),
    billing._apply_prepaid_credits(billing.invoices), billing._prepaid_credits_paid(bigint, bigint), billing._void_wallet_transactions(billing.invoices), billing._ongoing_usage(bigint, bigint, billing.usage_line[]), billing._wallet_ongoing_usage(bigint, bigint),
    billing.wallet_balance(text), billing._check_threshold_rules(bigint), billing._fire_rule(bigint, bigint, numeric),
    billing.add_top_up_rule(text, text, text, numeric, numeric, text, timestamptz, numeric, numeric), billing.remove_top_up_rule(bigint),
    billing._last_interval_instant(billing.billing_interval, timestamptz, timestamptz), billing._announce_spend_caps(timestamptz),
    billing.run_wallets(timestamptz), billing.set_spend_cap(text, numeric, boolean), billing.authorize(text, text, numeric),
    billing.wallet_discrepancies() FROM PUBLIC;

-- pg_dump keeps the rows (the tables belong to the extension).
SELECT pg_catalog.pg_extension_config_dump('billing.wallets', '');
SELECT pg_catalog.pg_extension_config_dump('billing.wallets_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.wallet_directory', '');
SELECT pg_catalog.pg_extension_config_dump('billing.wallet_transactions', '');
SELECT pg_catalog.pg_extension_config_dump('billing.wallet_transactions_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.wallet_recurring_rules', '');
SELECT pg_catalog.pg_extension_config_dump('billing.wallet_recurring_rules_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.spend_caps', '');
SELECT pg_catalog.pg_extension_config_dump('billing.burned_usage', '');

CREATE OR REPLACE FUNCTION billing.set_payment_status(invoice_id bigint, status text) RETURNS billing.invoices
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
    PERFORM billing._settle_purchase(inv);
    RETURN inv;
END $$;

CREATE OR REPLACE PROCEDURE billing.run_billing(as_of timestamptz DEFAULT now())
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
    PERFORM billing.run_wallets(as_of);
    COMMIT;
    PERFORM pg_advisory_unlock(hashtext('pg_billing: billing run'));
END $$;

-- Wallets with their balances now (the ongoing balance, which prices current usage, is
-- billing.wallet_balance's).
CREATE VIEW billing_bi.wallets AS
SELECT w.external_id AS wallet_external_id, c.external_id AS customer_external_id, w.code, w.name, w.status::text AS status,
       w.currency, w.rate_amount, w.priority, w.credits_balance, billing._credits_worth(w.credits_balance, w.rate_amount, w.currency) AS balance_amount,
       w.expiration_at, w.created_at, w.terminated_at
FROM billing.wallets w JOIN billing.customers c ON c.id = w.customer_id;

-- The wallets' ledger: every credit in and out, signed (in positive, out negative).
CREATE VIEW billing_bi.wallet_transactions AS
SELECT t.id AS transaction_id, w.external_id AS wallet_external_id, c.external_id AS customer_external_id,
       t.transaction_type::text AS transaction_type, t.transaction_status::text AS transaction_status, t.status::text AS status,
       t.source::text AS source, CASE t.transaction_type WHEN 'inbound' THEN t.credits ELSE -t.credits END AS credits,
       CASE t.transaction_type WHEN 'inbound' THEN t.amount ELSE -t.amount END AS amount, w.currency, t.invoice_id, i.number AS invoice_number,
       t.reason, t.created_at, t.settled_at
FROM billing.wallet_transactions t
JOIN billing.wallets w ON w.customer_id = t.customer_id AND w.id = t.wallet_id
JOIN billing.customers c ON c.id = t.customer_id
LEFT JOIN billing.invoices i ON i.customer_id = t.customer_id AND i.id = t.invoice_id;

GRANT SELECT ON billing_bi.wallets, billing_bi.wallet_transactions TO billing_reader, billing_admin;
COMMENT ON ROLE billing_writer IS 'pg_billing: ingestion (single events, JSON batches, COPY into the intake, staged COPY), billing.authorize and billing.deduct_credits.';
-- Applications that sell by the request check and pay as they go (both security definer).
GRANT EXECUTE ON FUNCTION billing.deduct_credits(text, numeric, text, text), billing.authorize(text, text, numeric) TO billing_writer;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES ON ALL TABLES IN SCHEMA billing TO billing_admin;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA billing TO billing_admin;
GRANT EXECUTE ON ALL ROUTINES IN SCHEMA billing TO billing_admin;
REVOKE EXECUTE ON FUNCTION billing.distribute(integer) FROM billing_admin;

COMMENT ON SCHEMA billing IS 'pg_billing: usage-based billing (metering, pricing, invoicing) in SQL';

COMMENT ON TYPE billing.price IS
  'A validated price {"charge_model": ..., "properties": {...}} in Lago''s spelling: standard, graduated, volume, package, percentage, graduated_percentage or dynamic; the argument type of the pricing functions. Text output is canonical JSON; pg_billing''s tables store that JSON as jsonb, never this type.';
COMMENT ON FUNCTION billing.price_in(cstring) IS 'Text input of billing.price: parses and validates the JSON (22P02 malformed, 22023 invalid properties).';
COMMENT ON FUNCTION billing.price_out(billing.price) IS 'Text output of billing.price: canonical JSON with normalised decimals.';
COMMENT ON FUNCTION billing.price(jsonb) IS 'Validates a jsonb price into billing.price; also the jsonb → billing.price assignment cast.';
COMMENT ON FUNCTION billing.price_to_jsonb(billing.price) IS 'The canonical jsonb form of a price; also the billing.price → jsonb cast.';
COMMENT ON CAST (jsonb AS billing.price) IS 'Validates a jsonb price (assignment cast).';
COMMENT ON CAST (billing.price AS jsonb) IS 'The canonical jsonb form of a price.';

COMMENT ON FUNCTION billing.amount(billing.price, numeric) IS
  'Exact, unrounded amount of a price for a number of units (negative amounts clamp to 0). Event-based models see the units as one event; dynamic reads them as cents.';
COMMENT ON FUNCTION billing.amount(billing.price, numeric[], text) IS
  'Exact, unrounded amount of a price for the period''s event values in timestamp order (units = their sum): percentage free units, fixed fees and per-transaction bounds apply per event; dynamic sums precise_total_amount_cents in the currency''s minor units.';
COMMENT ON FUNCTION billing.amount_details(billing.price, numeric) IS
  'The breakdown behind billing.amount: per tier from_value, to_value, units, per-unit total, flat and total; package and percentage free and paid units and events.';
COMMENT ON FUNCTION billing.amount_details(billing.price, numeric[], text) IS
  'The breakdown behind billing.amount for a list of event values.';
COMMENT ON FUNCTION billing.round_money(numeric, text) IS
  'Rounds half-up (away from zero) to the ISO 4217 currency''s minor units: 2 for USD/EUR, 0 for JPY, 3 for KWD/BHD.';
COMMENT ON FUNCTION billing.currency_minor_units(text) IS 'Number of minor-unit digits of an ISO 4217 currency (22023 for an unknown code).';
COMMENT ON AGGREGATE billing.priced_sum(numeric, billing.price) IS
  'billing.amount(price, sum(value)) per group; NULL values are skipped, a group whose rows carry different prices is an error (22023).';
COMMENT ON FUNCTION billing._priced_sum_step(internal, numeric, billing.price) IS 'Private: transition function of billing.priced_sum.';
COMMENT ON FUNCTION billing._priced_sum_final(internal) IS 'Private: final function of billing.priced_sum.';

-- Catalog
COMMENT ON TYPE billing.invoice_numbering IS 'How a billing entity numbers invoices: per_customer or per_entity.';
COMMENT ON TYPE billing.aggregation IS 'How a billable metric aggregates event values: count, sum, max, unique_count, latest or weighted_sum.';
COMMENT ON TYPE billing.rounding_function IS 'How a billable metric rounds its aggregated units before pricing: round, ceil or floor.';
COMMENT ON TYPE billing.billing_interval IS 'The length of a plan''s billing period: weekly, monthly, quarterly, semiannual or yearly.';
COMMENT ON TYPE billing.billing_time IS 'Where a subscription''s periods start: calendar (the first day of each period) or anniversary (the subscription''s start day).';
COMMENT ON TYPE billing.subscription_status IS 'A subscription''s state: pending (starts later), active or terminated.';
COMMENT ON COLUMN billing.charges.price IS 'The charge''s price as canonical JSON (what billing.price prints): {"charge_model": ..., "properties": {...}}, checked valid and canonical on every write.';
COMMENT ON COLUMN billing.charge_filters.price IS 'The filter''s price as canonical JSON, with the charge''s model and the filter''s properties, checked like billing.charges.price.';
COMMENT ON TABLE billing.billing_entities IS 'Issuers of invoices: name, address, tax id, default currency and time zone, invoice prefix and numbering, grace period and payment term. One ''default'' entity exists after CREATE EXTENSION.';
COMMENT ON TABLE billing.customers IS 'Customers: external id, currency (ISO 4217), time zone (IANA), billing entity, address, tax id, metadata.';
COMMENT ON TABLE billing.billable_metrics IS 'What is measured: aggregation (count, sum, max, unique_count, latest, weighted_sum) of an event property, recurring or metered, rounding, filters.';
COMMENT ON TABLE billing.plans IS 'Plans by code; their terms live in billing.plan_versions.';
COMMENT ON TABLE billing.plan_versions IS 'One version of a plan''s terms: interval, base amount, currency, pay in advance, trial, minimum commitment, usage thresholds. Changes create a new version.';
COMMENT ON TABLE billing.charges IS 'A billable metric priced on a plan version: price, pay in advance, prorated, invoiceable, minimum amount, pricing group keys.';
COMMENT ON TABLE billing.charge_filters IS 'Per-filter prices of a charge: events whose properties match the filter''s values use its price.';
COMMENT ON TABLE billing.subscriptions IS 'A customer on a plan version: external id (the key events carry), status, dates, calendar or anniversary billing.';
COMMENT ON TABLE billing.customer_directory IS 'Which customer each external customer id names: where that id is unique across all customers (a reference table on Citus). Written by billing.create_customer.';
COMMENT ON TABLE billing.subscription_directory IS 'Which customer and subscription each external subscription id names, with the time zone and active window ingestion checks events against: where that id is unique, and how an event is routed to its customer (a reference table on Citus). Kept in step by billing.create_subscription and billing.terminate_subscription.';
COMMENT ON FUNCTION billing.create_billing_entity(text, text, text, text, text, text, integer, integer, jsonb, text) IS 'Creates a billing entity (issuer of invoices).';
COMMENT ON FUNCTION billing.create_customer(text, text, text, text, text, text, jsonb, text, jsonb) IS 'Creates a customer; currency and time zone default to the billing entity''s.';
COMMENT ON FUNCTION billing.create_billable_metric(text, text, text, text, boolean, text, integer, jsonb) IS 'Creates a billable metric, validating aggregation, field, recurrence, rounding and filters.';
COMMENT ON FUNCTION billing.create_plan(text, text, text, numeric, text, jsonb, boolean, integer, numeric, jsonb) IS 'Creates a plan, or a new version of it when the code exists, with its charges and their filters.';
COMMENT ON FUNCTION billing.create_subscription(text, text, text, timestamptz, text, integer) IS 'Subscribes a customer to a plan (its latest version unless one is named); pending until subscription_at.';
COMMENT ON FUNCTION billing.activate_subscriptions(timestamptz) IS 'Marks pending subscriptions whose start has come as active and applies the plan changes whose instant has come; returns how many subscriptions it activated.';
COMMENT ON FUNCTION billing.terminate_subscription(text, timestamptz) IS 'Terminates a subscription; later events for it are rejected.';

-- Metering
COMMENT ON TABLE billing.events IS 'Stored usage events, exactly once per (subscription, transaction_id).';
COMMENT ON TABLE billing.usage_rollups IS 'Per customer-local day partial aggregates of events, kept current at ingestion so current usage does not scan events.';
COMMENT ON TABLE billing.rejected_events IS 'Events refused at ingestion, with their payload, SQLSTATE and reason: nothing sent is lost.';
COMMENT ON TABLE billing.event_staging IS 'COPY target for bulk loads; billing.ingest_staged() validates, deduplicates and moves its rows.';
COMMENT ON TABLE billing.event_intake IS 'COPY (or INSERT) target that validates, deduplicates and stores events while the COPY runs (it keeps no rows); billing.last_intake() gives the counts.';
COMMENT ON FUNCTION billing._intake_start() IS 'Private: statement trigger starting a load into billing.event_intake.';
COMMENT ON FUNCTION billing._intake_row() IS 'Private: row trigger taking a row sent to billing.event_intake (which keeps none) and ingesting every 10,000.';
COMMENT ON FUNCTION billing._intake_end() IS 'Private: statement trigger ingesting the rows left when a load into billing.event_intake ends.';
COMMENT ON FUNCTION billing.last_intake() IS 'Counts (accepted, duplicates, conflicts, rejected) of the session''s last COPY or INSERT into billing.event_intake.';
COMMENT ON FUNCTION billing._stored_day(timestamptz, integer) IS 'Private: ts''s UTC day plus margin; raw reads bound events'' stored local day with it (any time zone is within two days).';
COMMENT ON FUNCTION billing._catalog_changed() IS 'Private: statement trigger on the catalog tables; queues the invalidation that empties every backend''s cached ingestion catalog once the change commits.';
COMMENT ON FUNCTION billing.ingest_event(text, text, text, timestamptz, jsonb, numeric) IS 'Records one event in the caller''s transaction; returns accepted, duplicate or conflict; raises on invalid input and writes nothing.';
COMMENT ON FUNCTION billing.ingest_events(jsonb) IS 'Records a JSON array of events; one (index, transaction_id, status, reason) row per event. Rejected events go to billing.rejected_events.';
COMMENT ON FUNCTION billing.direct_write_status() IS 'Whether ingestion stores batches in billing.events directly (as COPY does) in this session, and if not, why (the setting, the isolation level, a privilege, or a change to the table''s shape).';
COMMENT ON FUNCTION billing.ingest_staged(integer) IS 'Validates, deduplicates and moves the rows of billing.event_staging; returns accepted, duplicate, conflict and rejected counts.';

-- Usage
COMMENT ON FUNCTION billing.period_bounds(text, text, date, timestamptz, text) IS 'The billing period containing as_of for an interval and billing time (calendar or anniversary from anchor), in a time zone.';
COMMENT ON TYPE billing.usage_line IS 'One line of usage: a charge, filter and pricing group of a subscription in a window, with units, events and the exact amount.';
COMMENT ON FUNCTION billing.usage(text, timestamptz, timestamptz) IS 'Usage of a subscription in a window, per charge, filter and group: units, events and amount.';
COMMENT ON FUNCTION billing.current_usage(text) IS 'Usage of a subscription''s open billing period, per charge, filter and group.';
COMMENT ON FUNCTION billing.distribute(integer) IS 'On a Citus coordinator: distributes pg_billing by customer in one call (customers, subscriptions, events, usage_rollups, invoices, fees, billed_windows, billing_failures, outbox, customer_taxes, fee_taxes, applied_coupons, invoice_coupons, invoice_verifications, applied_usage_thresholds, subscription_fixed_charge_units, plan_changes, in_advance_usage, the credit note tables and the wallet tables (wallets, wallet_transactions, wallet_recurring_rules, spend_caps) distributed and colocated, shard_count shards each, default citus.shard_count; the catalog, the taxes and their attachments, the coupons and their limits, the add-ons, the usage thresholds, the fixed charges, the directories and invoice_sequences as reference tables; rejected_events and the COPY tables local). Returns each table with its placement. 55000 without Citus or when already distributed.';
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
COMMENT ON TYPE billing.invoice_type IS 'What an invoice bills: subscription (a subscription''s periods), one_off (one-off items), progressive_billing (usage past a threshold), pay_in_advance (a day''s events of charges paid in advance), credit (prepaid credits bought for a wallet).';
COMMENT ON TYPE billing.invoice_status IS 'An invoice''s lifecycle: draft (recomputable), finalized (numbered, immutable), voided.';
COMMENT ON TYPE billing.payment_status IS 'What the application reports of an invoice''s payment: pending, succeeded, failed.';
COMMENT ON TYPE billing.fee_type IS 'What a fee bills: subscription (base fee), charge (usage, in arrears or paid in advance), charge_minimum (a charge''s minimum spend true-up), commitment (the plan''s minimum commitment true-up), adjustment (late usage of a finalized period), add_on (a one-off item), fixed_charge (units of an add-on on a plan), credit (prepaid credits bought, on a credit-purchase invoice).';
COMMENT ON TABLE billing.invoices IS 'One invoice per subscription and billing instant (billing_at: a period''s close, the start, a trial''s end or the termination), unique on (customer_id, subscription_id, billing_at); totals are sums of rounded fees. Finalized and voided invoices are immutable but for payment_status and voiding.';
COMMENT ON TABLE billing.fees IS 'What an invoice bills, one row per fee: exact amount (precise_amount) and amount rounded half-up to the currency; fee_key is unique per subscription, so nothing is billed twice. invoiceable = false fees are kept but not invoiced.';
COMMENT ON TABLE billing.billed_windows IS 'The usage windows each invoice computed and the events they held just before: how the billing run finds events that arrived for an already finalized period.';
COMMENT ON TABLE billing.invoice_sequences IS 'The last invoice number given per billing entity and month (entities numbering per_entity); locked while a number is taken, so numbers are gapless.';
COMMENT ON TABLE billing.billing_failures IS 'Subscriptions the billing run could not bill, with as_of, SQLSTATE, message and detail; a later successful billing of the subscription removes its rows.';
COMMENT ON TABLE billing.outbox IS 'Billing events for applications (invoice.created, invoice.finalized, invoice.voided, invoice.payment_status_updated), written in the transaction of the change and announced by pg_notify(''pg_billing'', id). Consume with DELETE ... RETURNING.';
COMMENT ON PROCEDURE billing.run_billing(timestamptz) IS 'The billing run: activates pending subscriptions, bills every subscription due as of as_of (one transaction each; a failure is recorded in billing.billing_failures and the run goes on), then finalizes drafts whose grace period is over, and does the wallets'' periodic work (billing.run_wallets). Call it outside a transaction block. A second run while one is in progress returns at once.';
COMMENT ON PROCEDURE billing.finalize_drafts(timestamptz) IS 'Refreshes and finalizes every draft whose billing entity''s grace period is over as of as_of, one transaction each.';
COMMENT ON FUNCTION billing.bill_subscription(text, timestamptz) IS 'Bills one subscription up to as_of in the caller''s transaction (what the billing run does for each); returns the invoices created. 23503 for an unknown subscription.';
COMMENT ON FUNCTION billing.refresh_invoice(bigint) IS 'Recomputes a draft''s fees and totals from the usage as it is now (late events within the period land there). 55000 unless the invoice is a draft.';
COMMENT ON FUNCTION billing.finalize_invoice(bigint) IS 'Refreshes a draft, then finalizes it: number, due date, immutable from then on. 55000 unless the invoice is a draft.';
COMMENT ON FUNCTION billing.void_invoice(bigint) IS 'Voids a finalized invoice that is not paid; its fees stay billed (never billed again). The prepaid credits it consumed go back to their wallets; the credits a voided credit-purchase invoice bought fail (pending) or are taken back (settled; 23514 if spent). 55000 otherwise.';
COMMENT ON FUNCTION billing.set_payment_status(bigint, text) IS 'Records a finalized invoice''s payment status: pending, succeeded or failed; on a credit-purchase invoice, settles (succeeded) or fails (failed) the credits it bought. 22023 for another word, 55000 unless finalized.';
COMMENT ON FUNCTION billing.invoice_document(bigint) IS 'Everything needed to render or send an invoice, as one JSON document (issuer, customer, subscription, periods, lines with tier details, totals, number, dates; shape in docs/reference/invoicing.md).';
COMMENT ON FUNCTION billing._invoice_immutable() IS 'Private: trigger refusing changes to finalized and voided invoices (55000), but for payment_status and voiding.';
COMMENT ON FUNCTION billing._fee_immutable() IS 'Private: trigger refusing changes to the fees of finalized and voided invoices, and to their taxes (55000).';

COMMENT ON TABLE billing.taxes IS 'Taxes: code, name, rate in percent (0 to 100) and description. A rate change applies to invoices whose totals are computed afterwards, never to finalized ones.';
COMMENT ON TABLE billing.billing_entity_taxes IS 'The default taxes of a billing entity''s customers (the last in precedence: charge, plan, customer, billing entity).';
COMMENT ON TABLE billing.plan_taxes IS 'The taxes of a plan''s fees (base, usage without charge taxes, minimums and commitment), before the customer''s and the entity''s.';
COMMENT ON TABLE billing.charge_taxes IS 'The taxes of a charge''s fees, first in precedence.';
COMMENT ON TABLE billing.customer_taxes IS 'The taxes of a customer''s fees when neither their charge nor their plan has taxes.';
COMMENT ON TABLE billing.fee_taxes IS 'Each tax on each invoiced fee, with the tax''s code, name and rate when the invoice''s totals were computed; base_amount is the rounded fee, precise_amount = base_amount x rate / 100 exactly. The invoice rounds each tax''s sum once. Immutable once the invoice is finalized.';
COMMENT ON FUNCTION billing.create_tax(text, text, numeric, text) IS 'Creates a tax: code (unique), name, rate in percent (0 to 100; 22023 otherwise), description. 23505 if the code exists.';
COMMENT ON FUNCTION billing.update_tax(text, numeric, text, text) IS 'Changes a tax''s rate, name or description (what is NULL stays). Invoices whose totals are computed afterwards use it: new invoices, drafts refreshed or finalized; never finalized ones. 23503 unknown tax, 22023 bad rate.';
COMMENT ON FUNCTION billing.set_taxes(text, text, text[]) IS 'Sets the taxes of a billing_entity (by code), customer (by external id), plan (by code), charge (by id) or add_on (by code), replacing those it had (an empty array removes them); returns the codes now set. 22023 unknown target kind, 23503 unknown target or tax.';
COMMENT ON FUNCTION billing._tax(text) IS 'Private: the tax with this code, or 23503.';
COMMENT ON FUNCTION billing._check_tax_rate(numeric) IS 'Private: the rate if it is a percentage from 0 to 100, else 22023.';
COMMENT ON FUNCTION billing._tax_fees(bigint, bigint) IS 'Private: taxes a draft''s invoiced fees anew (charge taxes, else the first set of plan, customer and billing entity) and returns the invoice''s tax total, each tax''s exact sum rounded once.';
COMMENT ON TYPE billing.coupon_type IS 'fixed_amount (an amount in a currency) or percentage (a rate in percent).';
COMMENT ON TYPE billing.coupon_frequency IS 'once (one invoice; a fixed amount carries its remainder to the next ones), recurring (frequency_duration invoices) or forever.';
COMMENT ON TYPE billing.applied_coupon_status IS 'active or terminated (used up, expired in its duration, or terminated by billing.terminate_coupon).';
COMMENT ON TABLE billing.coupons IS 'Coupons: code, name, fixed_amount (amount, currency) or percentage (percentage_rate), frequency once / recurring (frequency_duration invoices) / forever, expires_at (no longer applicable to customers after it).';
COMMENT ON TABLE billing.coupon_plans IS 'The plans a coupon is limited to: it covers the invoices of subscriptions to them.';
COMMENT ON TABLE billing.coupon_billable_metrics IS 'The billable metrics a coupon is limited to: it covers the fees of charges on them.';
COMMENT ON TABLE billing.applied_coupons IS 'Coupons applied to customers, with what is left: amount_remaining of a once fixed_amount coupon, frequency_duration_remaining of a recurring one; status active or terminated.';
COMMENT ON TABLE billing.invoice_coupons IS 'What each coupon took off each finalized invoice, rounded to the currency; the fees carry its spread in precise_coupons_amount.';
COMMENT ON COLUMN billing.fees.precise_coupons_amount IS 'The fee''s share of the invoice''s coupons, pro rata to what was left of the fee, with 5 decimals; set at finalization. Taxes apply to amount - precise_coupons_amount.';
COMMENT ON FUNCTION billing.create_coupon(text, text, text, numeric, text, numeric, text, integer, timestamptz, text[], text[]) IS 'Creates a coupon: fixed_amount (amount, currency) or percentage (percentage_rate), frequency once / recurring (frequency_duration) / forever, optional expiry, limited to plans or to billable metrics (not both). 22023 bad input, 23503 unknown plan or metric, 23505 existing code.';
COMMENT ON FUNCTION billing.apply_coupon(text, text, numeric) IS 'Applies a coupon to a customer (amount overrides a fixed coupon''s); it comes off the customer''s invoices at finalization. 23503 unknown customer or coupon, 55000 expired coupon, 23505 already active for the customer, 22023 currency or amount mismatch.';
COMMENT ON FUNCTION billing.terminate_coupon(text, text) IS 'Ends a customer''s active application of a coupon. 23503 when the customer has none.';
COMMENT ON FUNCTION billing._coupon(text) IS 'Private: the coupon with this code, or 23503.';
COMMENT ON FUNCTION billing._apply_coupons(billing.invoices) IS 'Private: takes the customer''s active coupons off an invoice being finalized (metric-limited, then plan-limited, then the rest, by application order): records each amount, spreads it over the covered fees and uses the coupons up.';
COMMENT ON FUNCTION billing.preview_invoice(text, timestamptz, text) IS 'The invoice document the subscription would get at the end of the billing period holding as_of, from the usage so far, finalized as the run would (coupons, taxes), optionally under another plan''s current version; computed by the billing code and rolled back, writing nothing. status is preview; no id or number. NULL when nothing is left to invoice. 23503 unknown subscription or plan, 22023 a plan in another currency.';
COMMENT ON VIEW billing_bi.taxes_collected IS 'Taxes of finalized invoices per month of issuing date, currency and tax (code, name, rate as invoiced): invoices, taxed base and amount (each invoice''s tax rounded once).';
COMMENT ON VIEW billing_bi.coupons_redeemed IS 'What coupons took off finalized invoices per month of issuing date, currency and coupon: invoices, customers, amount.';
COMMENT ON VIEW billing_bi.invoices_to_verify IS 'Finalized invoices never verified by billing.verify_invoice (verification unverified), or whose latest verification found drifting lines or inconsistent totals (verification drift).';
COMMENT ON TABLE billing.invoice_verifications IS 'Each billing.verify_invoice of an invoice: when, how many usage lines drift, whether the totals are consistent, and the whole report.';
COMMENT ON FUNCTION billing.verify_invoice(bigint) IS 'Recomputes a finalized invoice''s usage lines from the raw events on the plan version they were billed on, compares them with everything billed for them (fee and later adjustments), checks the totals'' arithmetic, records and returns the report (drifting_lines empty and totals_consistent true when all is right). 23503 unknown invoice, 55000 not finalized.';
COMMENT ON TABLE billing.add_ons IS 'Add-ons: one-off items with a default price (amount in currency) for one-off invoices.';
COMMENT ON TABLE billing.add_on_taxes IS 'The taxes of an add-on''s items when the item names none (before the customer''s and the billing entity''s).';
COMMENT ON COLUMN billing.fees.add_on_id IS 'The add-on a one-off item bills (NULL otherwise).';
COMMENT ON COLUMN billing.fees.tax_ids IS 'Taxes named for this fee (a one-off item''s or its add-on''s), which replace the precedence of charge, plan, customer and billing entity; NULL: by precedence.';
COMMENT ON FUNCTION billing.create_add_on(text, text, numeric, text, text) IS 'Creates an add-on: code (unique), name, default amount (0 or more, with the currency''s decimals), currency, description. 22023 bad input, 23505 existing code.';
COMMENT ON FUNCTION billing.create_one_off_invoice(text, jsonb) IS 'An invoice of one-off items for a customer, finalized at once: items [{"add_on_code"?, "description"?, "units"? (1), "unit_amount"?, "tax_codes"?}], an add-on giving the default description and unit amount; taxes: the item''s, else its add-on''s, else the customer''s, else the entity''s. 23503 unknown customer, add-on or tax; 22023 bad items or an add-on in another currency.';
COMMENT ON TYPE billing.credit_note_reason IS 'Why a credit note was issued: duplicated_charge, product_unsatisfactory, order_change, order_cancellation, fraudulent_charge or other.';
COMMENT ON TYPE billing.credit_status IS 'available (credit left for later invoices), consumed (none left) or voided (given up).';
COMMENT ON TABLE billing.credit_notes IS 'Credit notes of finalized invoices, numbered <invoice number>-CN<n>: items total (before tax), taxes, total = refund + credit, balance_amount (credit left for later invoices), credit_status.';
COMMENT ON TABLE billing.credit_note_items IS 'What a credit note credits of each fee, before tax; never more than the fee less its coupon share less earlier credit notes.';
COMMENT ON TABLE billing.credit_note_taxes IS 'Each tax a credit note gives back: the items'' exact tax (item x rate) and the amount, rounded on the running sum of the invoice''s credit notes so that crediting everything gives back the invoice''s taxes.';
COMMENT ON TABLE billing.invoice_credit_notes IS 'The credit each invoice consumed at finalization, per credit note (oldest first, after tax, before prepaid credits).';
COMMENT ON FUNCTION billing.create_credit_note(bigint, jsonb, text, numeric, numeric, text) IS 'Credits a finalized invoice: items [{"fee_id", "amount"}] before tax, at most what is left creditable of each fee (23514); taxes in proportion; refund (a paid invoice only, 55000) + credit (default: the rest) = total. 23503 unknown invoice or fee, 22023 bad items, reason or amounts, 55000 invoice not finalized.';
COMMENT ON FUNCTION billing.void_credit_note(bigint) IS 'Gives up what is left of a credit note''s credit. 23503 unknown credit note, 55000 no credit left.';
COMMENT ON FUNCTION billing._creditable(bigint, bigint) IS 'Private: what is left creditable of each invoiced fee of an invoice (before tax).';
COMMENT ON FUNCTION billing._apply_credit_notes(billing.invoices) IS 'Private: consumes the customer''s available credit notes, oldest first, on an invoice being finalized, up to its sub-total including taxes; returns whether any was used.';
COMMENT ON VIEW billing_bi.credit_notes IS 'One row per credit note: number, invoice number, customer, reason, currency, totals before and with tax, refund, credit, the credit left and its status.';
COMMENT ON FUNCTION billing._credit_unused_days(billing.subscriptions, billing.customers, bigint, timestamptz, date) IS 'Private: once per base fee paid in advance whose plan ended early (termination, upgrade), a credit note for its unused days (plan amount / period days x days, less the coupon share, with taxes, at most what is left creditable).';
COMMENT ON TABLE billing.usage_thresholds IS 'Progressive billing: the usage thresholds of a plan version (amount; recurring or not, at most one recurring), compared by the billing run with each subscription''s lifetime usage amount.';
COMMENT ON TABLE billing.applied_usage_thresholds IS 'Each threshold level a subscription crossed, known by kind (recurring) and level (a fixed threshold''s amount, or the highest fixed amount plus a multiple of the recurring one), with the lifetime usage amount then and the progressive-billing invoice it issued.';
COMMENT ON COLUMN billing.fees.progressive_credit_amount IS 'On a subscription invoice''s usage fee: what the period''s progressive-billing invoices billed of this usage line, deducted before coupons and tax (at most the fee).';
COMMENT ON FUNCTION billing.set_usage_thresholds(text, jsonb) IS 'Replaces the usage thresholds of a plan''s current version: [{"amount", "recurring"?, "name"?}], amounts with the currency''s decimals, at most one recurring; returns how many. 23503 unknown plan, 22023 bad thresholds.';
COMMENT ON FUNCTION billing._lifetime_usage(billing.subscriptions, billing.customers, timestamptz, timestamptz) IS 'Private: a subscription''s lifetime usage amount: the usage of its subscription invoices before window_from (voided ones aside) plus the open period''s usage to as_of.';
COMMENT ON FUNCTION billing._bill_usage_thresholds(billing.subscriptions, billing.customers, timestamptz) IS 'Private: checks a subscription''s usage thresholds at as_of; if it crossed new levels, creates the progressive-billing invoice (the open period''s usage less what earlier ones billed) and records the levels; returns its id or NULL.';
COMMENT ON FUNCTION billing._credit_progressive_billing(bigint, bigint) IS 'Private: sets the progressive-billing credit of a subscription invoice''s usage fees: what the period''s progressive invoices billed of each line, at most the fee.';
COMMENT ON TABLE billing.fixed_charges IS 'Fixed charges of a plan version: units of an add-on no event measures, priced standard, graduated or volume (canonical JSON price), default units, in advance or in arrears, prorated or not.';
COMMENT ON TABLE billing.subscription_fixed_charge_units IS 'A subscription''s own units of a fixed charge from effective_at on (the latest at or before an instant is in force); before any, the plan''s default.';
COMMENT ON FUNCTION billing.add_fixed_charge(text, text, text, jsonb, numeric, boolean, boolean) IS 'Adds a fixed charge to a plan''s current version: an add-on''s units priced with standard, graduated or volume and its properties; default units, pay_in_advance, prorated. 23503 unknown plan or add-on, 22023 bad model, price, units or currency, 23505 the add-on is charged already.';
COMMENT ON FUNCTION billing.set_fixed_charge_units(text, text, numeric, timestamptz) IS 'Sets a subscription''s units of a fixed charge (by add-on code) from at on; a change during a period is prorated when the charge is. 23503 unknown subscription or fixed charge, 22023 bad units or instant.';
COMMENT ON FUNCTION billing._add_fixed_charge_fees(billing.subscriptions, billing.customers, bigint, boolean, date, date, timestamptz, timestamptz, text) IS 'Private: the fees of a subscription''s fixed charges paid in advance or in arrears for one period: units in force (or, prorated, each count weighted by its days over the period''s days), priced, with the add-on''s taxes.';
COMMENT ON FUNCTION billing._fixed_charge_units(bigint, bigint, bigint, timestamptz) IS 'Private: a subscription''s own units of a fixed charge set at or before an instant, oldest first.';
COMMENT ON FUNCTION billing._customer(text) IS 'Private: the customer with this external id, or 23503.';
COMMENT ON FUNCTION billing._plan_version(text) IS 'Private: the current (latest) version of the plan with this code, or 23503.';
COMMENT ON FUNCTION billing._invoice_taxes_amount(bigint, bigint, text) IS 'Private: an invoice''s tax total from its fees'' taxes, each tax''s exact sum rounded once to the currency.';
COMMENT ON TYPE billing.plan_change_kind IS 'A plan change: upgrade (the new plan costs at least as much per year; effective at once) or downgrade (effective at the end of the current period).';
COMMENT ON TABLE billing.plan_changes IS 'Each change of a subscription''s plan: from effective_at on it is billed on to_plan_version_id; pending until that instant (billing.cancel_plan_change removes it).';
COMMENT ON COLUMN billing.subscription_directory.plan_version_ids IS 'Every plan version the subscription is billed on (past, current and pending): ingestion keeps the event properties any of them splits usage by.';
COMMENT ON FUNCTION billing.change_plan(text, text, timestamptz) IS 'Moves a subscription to another plan''s current version: an upgrade (yearly-equivalent amount at least the old one''s) at `at`, billed at once when it has happened, with a credit note for an in-advance fee''s unused days; a downgrade at the end of the current period, pending until then. Replaces a pending change. 23503 unknown subscription or plan; 22023 same plan, other currency, bad instant; 55000 terminated at or before `at`, or `at` within an invoiced period or before the last change.';
COMMENT ON FUNCTION billing.cancel_plan_change(text) IS 'Cancels a subscription''s pending plan change (the latest) and returns it. 23503 unknown subscription, 55000 nothing pending or the change invoiced already.';
COMMENT ON FUNCTION billing._plan_segments(billing.subscriptions) IS 'Private: the plans of a subscription, oldest first, each with the instant it took effect and the next one''s (pending ones included).';
COMMENT ON FUNCTION billing._in_force(billing.subscriptions, timestamptz) IS 'Private: the subscription row with the plan version in force at an instant, and the instant that plan took effect.';
COMMENT ON FUNCTION billing._yearly_amount(billing.plan_versions) IS 'Private: a plan''s amount per year (weekly x 52, monthly x 12, quarterly x 4, semiannual x 2), which decides upgrade or downgrade.';
COMMENT ON FUNCTION billing._apply_plan_changes(timestamptz, bigint, bigint) IS 'Private: points subscriptions and the directory at the plan of the latest change whose instant has come (never ahead of now); returns how many changed.';
COMMENT ON FUNCTION billing._note_plan_versions(billing.subscriptions) IS 'Private: records in the directory every plan version a subscription is billed on, for ingestion.';
COMMENT ON FUNCTION billing._bill_plan_periods(billing.subscriptions, billing.customers, bigint, timestamptz, timestamptz, boolean, date, timestamptz, timestamptz, timestamptz) IS 'Private: bills the periods of one plan of a subscription for the time it was in force (through the day before a change), on the invoices of their billing instants.';
COMMENT ON VIEW billing_bi.plan_changes IS 'One row per plan change: subscription, customer, upgrade or downgrade, the plans and versions on both sides, the instant it takes effect, pending or effective.';
COMMENT ON FUNCTION billing._credit_ended_plans(billing.subscriptions, billing.customers, timestamptz[], bigint[], timestamptz) IS 'Private: the credit notes for the unused days of plans paid in advance that ended early by as_of (upgrades, a termination); once per fee.';
COMMENT ON TABLE billing.in_advance_usage IS 'Charges paid in advance: per subscription, charge, filter (0: the default bucket), pricing group and period, the units so far, the high-water mark billed, the events, the amount billed, what the latest event raised the mark by and billed, and (models priced per event) the values billed; its row lock orders concurrent events of one line.';
COMMENT ON FUNCTION billing._check_pay_in_advance(integer, billing.billable_metrics, text) IS 'Private: raises 22023 unless a charge paid in advance prices a count or sum metric that resets every period.';
COMMENT ON FUNCTION billing._in_advance_invoice(billing.subscriptions, billing.customers) IS 'Private: the subscription''s draft pay_in_advance invoice of the current customer-local day (billed at its end; after that one was finalized, one of the instant it is needed), locked, created if needed, and whether it was.';
COMMENT ON FUNCTION billing._bill_in_advance(bigint[], bigint[], bigint[], timestamptz[], numeric[], jsonb[], bigint[], numeric[]) IS 'Private: called by ingestion, as the extension''s owner, for the events just stored of charges paid in advance or of subscriptions with real-time spend control: each raises its line''s high-water mark and bills price(after) - price(before) on its subscription''s day invoice (paid in advance) or out of the customer''s burn-down wallets (usage billed in arrears); then enforces the caps enforced at ingestion (23514).';
COMMENT ON FUNCTION billing._bucket_units(billing.subscriptions, billing.customers, bigint, timestamptz, timestamptz) IS 'Private: a charge''s units per filter and pricing group in a window, as billing._metric_units counts them (a recurring metric from its beginning; with the instant before from_ts as to_ts, the units carried into it).';
COMMENT ON FUNCTION billing._bill_carried_in_advance(billing.subscriptions, billing.customers, bigint, timestamptz, timestamptz, date, date, timestamptz) IS 'Private: at the start of a period or plan, the recurring charges paid in advance bill the price of the units carried in (the full period, or prorated from that instant) and start the period''s lines from them; with no invoice, says whether there is anything to bill.';
COMMENT ON FUNCTION billing._price_rise(billing.price, text, integer, numeric, numeric, boolean) IS 'Private: what raising a line''s mark bills: price(after) - price(before) (price(after) for a first event), each mark rounded as the metric rounds units, never below 0.';
COMMENT ON FUNCTION billing._units_rise(text, integer, numeric, numeric) IS 'Private: by how many units, rounded as the metric rounds them, a line''s mark rose.';
COMMENT ON TYPE billing.wallet_status IS 'A wallet: active, or terminated (by billing.terminate_wallet or at its expiry).';
COMMENT ON TYPE billing.wallet_transaction_type IS 'A ledger row''s direction: inbound (credits into the wallet) or outbound (out of it).';
COMMENT ON TYPE billing.wallet_transaction_status IS 'A ledger row''s state: pending (purchased credits waiting for their invoice), settled (counted in the balance) or failed (never counted).';
COMMENT ON TYPE billing.wallet_transaction_kind IS 'What a ledger row is: inbound purchased, granted or restored (given back by a voided invoice, or burned down beyond what an invoice billed); outbound invoiced (paid an invoice), deducted (billing.deduct_credits), consumed (burned down by usage as ingested, one row per wallet and day), voided or expired.';
COMMENT ON TYPE billing.wallet_top_up_source IS 'What made a top-up: manual (billing.top_up), interval or threshold (a recurring rule).';
COMMENT ON TYPE billing.top_up_trigger IS 'When a recurring top-up rule fires: interval (every week, month, quarter, half-year or year from started_at) or threshold (the ongoing balance at or below threshold_credits, once per crossing).';
COMMENT ON TYPE billing.top_up_method IS 'What a recurring top-up rule buys: fixed (its paid and granted credits) or target (the paid credits that bring the ongoing balance to its target).';
COMMENT ON TABLE billing.wallets IS 'Prepaid credit wallets: per customer, code and external id, currency, rate (1 credit = rate_amount of the currency), priority, expiry, limits (fee types, metrics), paid top-up limits, settlement of purchases, and the balance in credits, kept by the ledger.';
COMMENT ON TABLE billing.wallet_directory IS 'Which customer''s wallet an external wallet id names: the one place that id is unique.';
COMMENT ON TABLE billing.wallet_transactions IS 'The wallets'' ledger, append-only: inbound (purchased, granted, restored) and outbound (invoiced, deducted, voided, expired) credits and their worth, status (pending, settled, failed), source, invoice, idempotency key, reason and metadata. Settled rows are the balance.';
COMMENT ON TABLE billing.wallet_recurring_rules IS 'Automatic top-ups of a wallet: on an interval or at a threshold of the ongoing balance, a fixed number of paid and granted credits or up to a target; armed says whether a threshold rule may fire again.';
COMMENT ON TABLE billing.spend_caps IS 'A subscription''s hard spend cap per billing period (billing.authorize refuses usage beyond it; NULL: none), whether ingestion enforces it and the prepaid balance, and the period for which spend_cap.reached was announced.';
COMMENT ON TABLE billing.burned_usage IS 'What burn-down took from each wallet for each line of usage (subscription, charge, filter, group, period), and the invoice that counted it as paid, with how much.';
COMMENT ON COLUMN billing.subscription_directory.realtime IS 'Whether ingestion prices the subscription''s events as it stores them for its spend control: a burn-down wallet of its customer, or its cap enforced at ingestion.';
COMMENT ON FUNCTION billing._realtime(bigint, bigint) IS 'Private: whether a subscription''s spend is controlled in real time (a burn-down wallet of its customer, or its cap enforced at ingestion).';
COMMENT ON FUNCTION billing._refresh_realtime(bigint) IS 'Private: keeps the directory''s realtime flag of a customer''s subscriptions in step.';
COMMENT ON FUNCTION billing._burn(billing.subscriptions, billing.customers, bigint, bigint, bigint, jsonb, timestamptz, numeric) IS 'Private: real-time burn-down: takes an event''s price rise from the customer''s burn-down wallets that may pay the metric, by priority, into one consumed ledger row per wallet and day, recorded against the line; returns what it took.';
COMMENT ON FUNCTION billing._lock_spend_control(bigint, bigint) IS 'Private: locks a subscription''s spend cap row and its customer''s active wallets (in id order) and returns the cap.';
COMMENT ON FUNCTION billing._over_cap(text, numeric, numeric, text, text) IS 'Private: raises 23514, a subscription''s usage this period would pass its cap.';
COMMENT ON FUNCTION billing._enforce_spend(bigint, bigint, numeric) IS 'Private: with the cap enforced at ingestion, 23514 when the period''s usage passes the cap, burn-down fell short, or the wallets do not cover the usage not yet invoiced; the cap and the wallets locked first.';
COMMENT ON FUNCTION billing._restore(bigint, bigint, numeric, numeric, bigint, text) IS 'Private: gives credits back to a wallet (a restored ledger row), unless it ended meanwhile.';
COMMENT ON FUNCTION billing._apply_burned_credits(billing.invoices) IS 'Private: at finalization, what burn-down took for the usage a subscription invoice bills counts as paid, per fee up to the fee and what is left; the rest is restored to the wallets.';
COMMENT ON FUNCTION billing._apply_to_balance(billing.wallet_transactions, numeric) IS 'Private: applies a settled ledger row (or what a burn-down day row grew by) to its wallet''s balance, counting the posting (23514 if it would overdraw it), and announces wallet.topped_up or wallet.depleted.';
COMMENT ON FUNCTION billing._wallet_transaction_immutable() IS 'Private: keeps the ledger append-only; a pending row may settle or fail once.';
COMMENT ON FUNCTION billing._wallet_balance_guard() IS 'Private: refuses a change of a wallet''s balance that counts no ledger posting (postings).';
COMMENT ON FUNCTION billing._credits_worth(numeric, numeric, text) IS 'Private: credits'' worth in the wallet''s currency, half-up to whole minor units (1,034 credits at 0.001 are 1.03).';
COMMENT ON FUNCTION billing._ongoing_credits(numeric, numeric, numeric) IS 'Private: a wallet''s ongoing balance in credits: its balance less the credits its share of usage not yet invoiced would take (never below 0).';
COMMENT ON FUNCTION billing._spendable(numeric, numeric, text) IS 'Private: what a wallet can pay, its balance''s worth rounded down to whole minor units.';
COMMENT ON FUNCTION billing._credits_for(numeric, numeric, numeric) IS 'Private: the credits an amount of currency takes from a wallet (rounded up at the 25th decimal, at most its balance).';
COMMENT ON FUNCTION billing._wallet_pays(billing.fee_type[], bigint[], billing.fee_type, bigint) IS 'Private: whether a wallet''s limits let it pay a fee of this type and metric.';
COMMENT ON FUNCTION billing._wallet_event(bigint, bigint) IS 'Private: the payload of a wallet''s outbox events.';
COMMENT ON FUNCTION billing._wallet(text) IS 'Private: the wallet with this external id, locked, or 23503.';
COMMENT ON FUNCTION billing._require_active(billing.wallets, text) IS 'Private: raises 55000 unless the wallet is active and not past its expiry.';
COMMENT ON FUNCTION billing._check_credits(text, numeric, boolean) IS 'Private: a positive (or non-negative) finite number of credits, or 22023.';
COMMENT ON FUNCTION billing._post(billing.wallets, billing.wallet_transaction_kind, billing.wallet_transaction_status, numeric, billing.wallet_top_up_source, bigint, numeric, text, jsonb) IS 'Private: writes a ledger row for a wallet (its amount the credits'' worth unless given).';
COMMENT ON FUNCTION billing._top_up(billing.wallets, numeric, numeric, billing.wallet_top_up_source, jsonb) IS 'Private: granted credits settled at once; paid credits billed on a credit-purchase invoice, finalized at once, pending until it settles them.';
COMMENT ON FUNCTION billing._settle_purchase(billing.invoices) IS 'Private: settles the credits a credit-purchase invoice bought (at finalization, or on payment when the wallet requires it), or fails them (failed payment, voided invoice).';
COMMENT ON FUNCTION billing.create_wallet(text, text, numeric, text, integer, timestamptz, jsonb, numeric, numeric, boolean, boolean, numeric, numeric, text) IS 'Creates a wallet for a customer (in its currency): code, rate_amount (1 credit = rate_amount), name, priority 1-50 (lower pays first), expiration_at, applies_to {"fee_types", "billable_metric_codes"}, paid top-up limits, whether purchases wait for payment, burn_down (ingestion takes each event''s price at once), initial paid and granted credits, external_id (default customer/code). 23503 unknown customer or metric, 23505 code or external id taken, 22023 bad values.';
COMMENT ON FUNCTION billing.top_up(text, numeric, numeric, jsonb) IS 'Tops a wallet up: granted credits settle at once; paid credits are billed on a credit-purchase invoice and settle at its finalization (or payment). Returns the ledger rows. 23503 unknown wallet, 22023 bad credits or outside the paid top-up limits, 55000 terminated or expired wallet.';
COMMENT ON FUNCTION billing.void_credits(text, numeric, text) IS 'Takes credits out of a wallet (an outbound voided row). 23503 unknown wallet, 22023 bad credits, 23514 more than the balance.';
COMMENT ON FUNCTION billing._end_wallet(billing.wallets, billing.wallet_transaction_kind, timestamptz) IS 'Private: ends a wallet: its balance out as voided or expired, its rules removed, terminated, announced (wallet.terminated or wallet.expired).';
COMMENT ON FUNCTION billing.terminate_wallet(text) IS 'Terminates a wallet: what is left is voided; its rules stop. 23503 unknown wallet.';
COMMENT ON FUNCTION billing.deduct_credits(text, numeric, text, text) IS 'Deducts credits from a wallet in the caller''s transaction; idempotent on its key (a replay returns the first deduction). 23514 if it would overdraw the wallet, 23505 a replay with other credits, 23503 unknown wallet, 22023 bad credits or key, 55000 terminated or expired wallet. billing_writer may call it.';
COMMENT ON FUNCTION billing._take_from_lines(billing.wallets, billing.fee_type[], bigint[], numeric[], numeric) IS 'Private: what a wallet takes, up to a cap, from lines of fees or usage it may pay (all of the cap without limits), and the lines'' amounts left.';
COMMENT ON FUNCTION billing._apply_prepaid_credits(billing.invoices) IS 'Private: at finalization, the customer''s wallets pay what is left after credit notes, by priority, each within its limits and balance; one invoiced ledger row per wallet. Not on credit-purchase invoices.';
COMMENT ON FUNCTION billing._prepaid_credits_paid(bigint, bigint) IS 'Private: the prepaid credits an invoice consumed, in currency, from the ledger.';
COMMENT ON FUNCTION billing._void_wallet_transactions(billing.invoices) IS 'Private: what voiding an invoice does to wallets: consumed credits restored, purchased credits failed or taken back.';
COMMENT ON FUNCTION billing._ongoing_usage(bigint, bigint, billing.usage_line[]) IS 'Private: what the customer''s usage not yet paid (open periods'' usage billed in arrears less what burn-down took, draft invoices'' fees; before tax) would take from each active wallet, by priority and limits, each up to its balance, and (wallet NULL) what no wallet covers; a caller may give one subscription''s current usage it has.';
COMMENT ON FUNCTION billing._wallet_ongoing_usage(bigint, bigint) IS 'Private: what the customer''s usage not yet paid would take from one wallet.';
COMMENT ON FUNCTION billing.wallet_balance(text) IS 'A wallet''s balance now (credits and worth) and its ongoing balance: the balance less what the customer''s usage not yet invoiced would take from it. 23503 unknown wallet.';
COMMENT ON FUNCTION billing._check_threshold_rules(bigint) IS 'Private: fires a customer''s armed threshold rules whose wallet''s ongoing balance is at or below the threshold, and arms again those above; returns how many fired.';
COMMENT ON FUNCTION billing._fire_rule(bigint, bigint, numeric) IS 'Private: one top-up by a rule: fixed credits, or the paid credits up to the target, within the wallet''s paid top-up limits.';
COMMENT ON FUNCTION billing.add_top_up_rule(text, text, text, numeric, numeric, text, timestamptz, numeric, numeric) IS 'Adds a recurring top-up rule to a wallet: trigger interval (with interval and started_at) or threshold (with threshold_credits); method fixed (paid_credits, granted_credits) or target (target_ongoing_balance). A threshold rule is checked at once. 23503 unknown wallet, 22023 bad combination, 55000 terminated wallet.';
COMMENT ON FUNCTION billing.remove_top_up_rule(bigint) IS 'Removes a recurring top-up rule; true if it existed.';
COMMENT ON FUNCTION billing._last_interval_instant(billing.billing_interval, timestamptz, timestamptz) IS 'Private: the last instant at or before as_of at which an interval rule fires (started_at plus one or more intervals).';
COMMENT ON FUNCTION billing._announce_spend_caps(timestamptz) IS 'Private: announces spend_cap.reached once per period for subscriptions whose open period''s usage reached their cap.';
COMMENT ON FUNCTION billing.run_wallets(timestamptz) IS 'The wallets'' periodic work as of an instant: expires wallets past their expiry, fires interval rules due (once however many instants passed), checks threshold rules, announces spend caps reached. Returns the counts. Called by billing.run_billing.';
COMMENT ON FUNCTION billing.set_spend_cap(text, numeric, boolean) IS 'Sets a subscription''s spend cap per billing period (NULL: none) and whether ingestion itself refuses events beyond it or beyond the prepaid balance (23514); with neither, removes it. 23503 unknown subscription, 22023 bad amount.';
COMMENT ON FUNCTION billing.authorize(text, text, numeric) IS 'The price of quantity more units of a metric on a subscription now; 23514 if it would exceed the subscription''s spend cap or the prepaid balance its wallets have beyond usage not yet invoiced. Writes nothing. 23503 unknown subscription or metric, 22023 bad quantity, 55000 terminated, 0A000 percentage or dynamic charges. billing_writer may call it.';
COMMENT ON FUNCTION billing.wallet_discrepancies() IS 'Wallets whose balance differs from the sum of their settled ledger rows (the invariant: none).';
COMMENT ON VIEW billing_bi.wallets IS 'One row per wallet: customer, code, status, currency, rate, priority, balance in credits and in currency, expiry.';
COMMENT ON VIEW billing_bi.wallet_transactions IS 'One row per ledger row: wallet, customer, type, kind, status, source, credits and amount signed (in positive, out negative), invoice, reason, when.';
-- END prepaid credits
