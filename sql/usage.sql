-- Billing periods and usage: what a subscription has consumed in a window, per charge,
-- filter and group, priced by the pricing engine.

CREATE FUNCTION billing.period_bounds(
    "interval" text, billing_time text, anchor date, as_of timestamptz, timezone text DEFAULT 'UTC'
) RETURNS TABLE (from_datetime timestamptz, to_datetime timestamptz, from_date date, to_date date, days integer)
LANGUAGE sql STABLE STRICT PARALLEL SAFE AS $$
    SELECT (d.from_date::timestamp AT TIME ZONE billing._check_timezone(timezone)),
           ((d.to_date + 1)::timestamp AT TIME ZONE timezone) - interval '1 microsecond',
           d.from_date, d.to_date, d.to_date - d.from_date + 1
    FROM billing._period_dates("interval", billing_time, anchor, (as_of AT TIME ZONE billing._check_timezone(timezone))::date) d
$$;

-- The filter an event's dimensions fall into: the matching filter with the most keys
-- (ties: the first created), or NULL for the charge's default bucket.
CREATE FUNCTION billing._charge_filter(charge_id bigint, dims jsonb) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT f.id FROM billing.charge_filters f
    WHERE f.charge_id = _charge_filter.charge_id
      AND NOT EXISTS (SELECT 1 FROM jsonb_each(f."values") kv
                      WHERE NOT (dims ? kv.key) OR NOT kv.value @> jsonb_build_array(dims -> kv.key))
    ORDER BY (SELECT count(*) FROM jsonb_object_keys(f."values")) DESC, f.id
    LIMIT 1
$$;

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

-- Metric rounding, applied after aggregation and before pricing. (A searched CASE: inlined
-- into a statement Citus 13.2 sends to its workers, a simple CASE on a constant is sent as
-- SQL they cannot run.)
CREATE FUNCTION billing._round_units(units numeric, rounding_function text, rounding_precision integer) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN rounding_function = 'round' THEN round(units, coalesce(rounding_precision, 0))
        WHEN rounding_function = 'ceil'
            THEN ceil(units * power(10::numeric, coalesce(rounding_precision, 0))) / power(10::numeric, coalesce(rounding_precision, 0))
        WHEN rounding_function = 'floor'
            THEN floor(units * power(10::numeric, coalesce(rounding_precision, 0))) / power(10::numeric, coalesce(rounding_precision, 0))
        ELSE units END
$$;

-- The stored local day (billing.events.local_day, the customer's day at ingestion) of an
-- event at `ts` is within two days of ts's UTC day, whatever the time zone: raw reads
-- bound local_day with it (from_ts's day - 2 to to_ts's day + 2), which lets them use the
-- events_by_period index, and then pick the window's events by timestamp exactly.
CREATE FUNCTION billing._stored_day(ts timestamptz, margin integer) RETURNS date
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT (ts AT TIME ZONE 'UTC')::date + margin
$$;

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

-- Prorated units: day-weighted units / days of the billing period, rounded up at 5
-- decimals (10 × 17 / 31 → 5.48388), computed exactly with integer division.
CREATE FUNCTION billing._prorate(day_units numeric, period_days integer) RETURNS numeric
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT trim_scale((div(day_units * 100000, period_days)
                       + CASE WHEN mod(day_units * 100000, period_days) > 0 THEN 1 ELSE 0 END) / 100000)
$$;

-- Event values in timestamp order per dimension set, for charges priced per event
-- (percentage, dynamic). For a recurring metric the caller passes from_ts '-infinity', so
-- the carried-in events are priced like the units count them.
-- (PL/pgSQL: Citus plans no SQL-language function that reads a distributed table with
-- parameters.)
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

-- The subscription with this external id, or 23503.
CREATE FUNCTION billing._subscription(external_id text) RETURNS billing.subscriptions
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

-- One line of usage: a charge, filter and pricing group of a subscription in a window.
CREATE TYPE billing.usage_line AS (
    charge_id bigint, billable_metric_code text, aggregation text, charge_model text,
    filter_id bigint, filter_values jsonb, grouped_by jsonb,
    units numeric, events_count bigint, amount numeric, currency text,
    from_datetime timestamptz, to_datetime timestamptz
);

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

CREATE FUNCTION billing.usage(external_subscription_id text, window_from timestamptz, window_to timestamptz)
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

-- Usage of the open billing period on the plan in force (from the later of the period
-- start and the plan's start, to the earlier of the period end and the termination); for a
-- terminated subscription, its last period.
CREATE FUNCTION billing.current_usage(external_subscription_id text)
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

REVOKE ALL ON FUNCTION billing._subscription(text), billing._customer(text), billing._plan_version(text), billing._charge_filter(bigint, jsonb), billing._group_of(text[], jsonb),
    billing._usage(billing.subscriptions, billing.customers, timestamptz, timestamptz, boolean),
    billing._round_units(numeric, text, integer), billing._stored_day(timestamptz, integer),
    billing._metric_units(bigint, bigint, billing.billable_metrics, timestamptz, timestamptz, text, boolean),
    billing._metric_day_units(bigint, bigint, billing.billable_metrics, timestamptz, timestamptz, text, boolean), billing._prorate(numeric, integer),
    billing._metric_event_values(bigint, bigint, bigint, timestamptz, timestamptz, boolean),
    billing._period_dates(text, text, date, date) FROM PUBLIC;
