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

-- Bills the events just stored that are priced as they are stored (one array element per
-- event, in ingestion order: their customer, subscription, metric, instant, value and
-- dimensions), called by ingestion when a batch holds events of charges paid in advance or
-- of subscriptions with real-time spend control: charges paid in advance on the day's
-- invoice; with a wallet burned down in real time, the price rise of usage charges billed in
-- arrears out of the wallet (billing._burn, the same high-water marks); then what the
-- subscriptions' enforced caps refuse (billing._enforce_spend). Subscriptions in key order,
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
