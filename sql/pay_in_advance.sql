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
    PRIMARY KEY (customer_id, subscription_id, charge_id, charge_filter_id, grouped_by, period_from)
);

-- The charge models and aggregations billed at ingestion: a model priced on the period's
-- units (never per event), a metric whose units add up event by event.
CREATE FUNCTION billing._check_pay_in_advance(charge_index integer, metric billing.billable_metrics, model text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
#variable_conflict use_variable
BEGIN
    IF metric.aggregation NOT IN ('count', 'sum') OR metric.recurring THEN
        PERFORM billing._invalid(format('charges[%s] cannot be paid in advance: metric "%s" is a %s%s metric', charge_index, metric.code,
                                        CASE WHEN metric.recurring THEN 'recurring ' ELSE '' END, metric.aggregation),
            format('got "pay_in_advance": true for metric "%s"', metric.code),
            'charges paid in advance bill count and sum metrics that reset every period; bill this one in arrears');
    ELSIF model NOT IN ('standard', 'graduated', 'graduated_percentage', 'package', 'volume') THEN
        PERFORM billing._invalid(format('charges[%s] cannot be paid in advance with charge_model %s', charge_index, model),
            format('got "pay_in_advance": true and charge_model %s', model),
            'charges paid in advance use the standard, graduated, graduated_percentage, package or volume model; bill this one in arrears');
    END IF;
END $$;

-- The subscription's draft invoice of pay-in-advance fees for the day of now() (customer-local),
-- locked; created if it is not there yet (and announced). A day's invoice finalized already
-- (by hand, before the day ended) is left alone: the fees go on one of this instant.
CREATE FUNCTION billing._in_advance_invoice(sub billing.subscriptions, cust billing.customers) RETURNS bigint
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    at timestamptz := (((now() AT TIME ZONE cust.timezone)::date + 1)::timestamp AT TIME ZONE cust.timezone);
    found_invoice billing.invoices;
BEGIN
    FOR attempt IN 1 .. 2 LOOP
        SELECT * INTO found_invoice FROM billing.invoices i
        WHERE i.customer_id = sub.customer_id AND i.subscription_id = sub.id AND i.billing_at = at AND i.invoice_type = 'pay_in_advance'
        FOR UPDATE;
        IF found_invoice.id IS NULL THEN
            INSERT INTO billing.invoices (customer_id, subscription_id, billing_entity_id, invoice_type, currency, timezone, billing_at, issuing_date)
            VALUES (sub.customer_id, sub.id, cust.billing_entity_id, 'pay_in_advance', cust.currency, cust.timezone, at,
                    (at AT TIME ZONE cust.timezone)::date)
            ON CONFLICT ON CONSTRAINT invoices_billing_key DO NOTHING
            RETURNING * INTO found_invoice;
            IF found_invoice.id IS NULL THEN
                -- Created by a concurrent ingestion: take it, locked.
                CONTINUE;
            END IF;
            PERFORM billing._emit(sub.customer_id, 'invoice.created', billing._invoice_event(found_invoice));
            RETURN found_invoice.id;
        END IF;
        IF found_invoice.status = 'draft' THEN
            RETURN found_invoice.id;
        END IF;
        at := now();
        found_invoice := NULL;
    END LOOP;
    RETURN found_invoice.id;
END $$;

-- Bills the pay-in-advance charges of events just stored (one array element per event, in
-- ingestion order: their customer, subscription, metric, instant, value and dimensions),
-- called by ingestion when a batch holds events of such charges. Subscriptions in key order,
-- each one's day invoice locked before its usage lines, so that concurrent ingestions wait on
-- each other instead of deadlocking.
CREATE FUNCTION billing._bill_in_advance(
    customer_ids bigint[], subscription_ids bigint[], metric_ids bigint[], instants timestamptz[], event_values numeric[], dims jsonb[]
) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    ev record;
    sub billing.subscriptions;
    cust billing.customers;
    invoice_id bigint;
    invoices bigint[] := '{}';
    customers bigint[] := '{}';
    invoice_at timestamptz;
    in_force record;
    plan billing.plan_versions;
    ch record;
    filter billing.charge_filters;
    line_price billing.price;
    bounds record;
    window_from timestamptz;
    period_to timestamptz;
    fee_key text;
    grouped jsonb;
    line billing.in_advance_usage;
    delta numeric;
    high_water numeric;
    fee numeric;
BEGIN
    FOR ev IN
        SELECT e.* FROM unnest(customer_ids, subscription_ids, metric_ids, instants, event_values, dims) WITH ORDINALITY
                        AS e(customer_id, subscription_id, metric_id, at, value, dims, n)
        ORDER BY e.customer_id, e.subscription_id, e.n
    LOOP
        IF sub.id IS DISTINCT FROM ev.subscription_id OR sub.customer_id IS DISTINCT FROM ev.customer_id THEN
            SELECT * INTO sub FROM billing.subscriptions s WHERE s.customer_id = ev.customer_id AND s.id = ev.subscription_id;
            SELECT * INTO cust FROM billing.customers c WHERE c.id = ev.customer_id;
            invoice_id := billing._in_advance_invoice(sub, cust);
            SELECT i.billing_at INTO invoice_at FROM billing.invoices i WHERE i.customer_id = sub.customer_id AND i.id = invoice_id;
            invoices := invoices || invoice_id;
            customers := customers || sub.customer_id;
        END IF;
        in_force := billing._in_force(sub, ev.at);
        SELECT * INTO plan FROM billing.plan_versions v WHERE v.id = (in_force.billed).plan_version_id;
        SELECT * INTO bounds FROM billing.period_bounds(plan.interval::text, sub.billing_time::text,
            (coalesce(sub.started_at, sub.subscription_at) AT TIME ZONE cust.timezone)::date, ev.at, cust.timezone) pb;
        window_from := greatest(bounds.from_datetime, in_force.since);
        FOR ch IN
            SELECT c.id, c.price, c.pricing_group_keys, c.invoiceable, m.code AS metric_code, m.name,
                   EXISTS (SELECT 1 FROM billing.charge_filters cf WHERE cf.charge_id = c.id) AS filtered
            FROM billing.charges c JOIN billing.billable_metrics m ON m.id = c.billable_metric_id
            WHERE c.plan_version_id = plan.id AND c.billable_metric_id = ev.metric_id AND c.pay_in_advance
            ORDER BY c.position
        LOOP
            filter := NULL;
            IF ch.filtered THEN
                SELECT * INTO filter FROM billing.charge_filters cf WHERE cf.id = billing._charge_filter(ch.id, coalesce(ev.dims, '{}'));
            END IF;
            line_price := coalesce(filter.price, ch.price)::billing.price;
            SELECT g.grouped_by INTO grouped FROM billing._group_of(ch.pricing_group_keys, coalesce(ev.dims, '{}')) g;
            delta := coalesce(ev.value, 1);
            INSERT INTO billing.in_advance_usage AS u (customer_id, subscription_id, charge_id, charge_filter_id, grouped_by, period_from,
                                                      units, billed_units, events_count, billed_amount)
            VALUES (sub.customer_id, sub.id, ch.id, coalesce(filter.id, 0), grouped, window_from, 0, 0, 0, 0)
            ON CONFLICT ON CONSTRAINT in_advance_usage_pkey DO NOTHING;
            SELECT * INTO line FROM billing.in_advance_usage u
            WHERE u.customer_id = sub.customer_id AND u.subscription_id = sub.id AND u.charge_id = ch.id
              AND u.charge_filter_id = coalesce(filter.id, 0) AND u.grouped_by = grouped AND u.period_from = window_from
            FOR UPDATE;
            high_water := greatest(line.billed_units, line.units + delta);
            -- price(after) - price(before), the line's first event with the price of 0 units
            -- (a first tier's flat fee); a price that falls as units grow (volume tiers) bills
            -- nothing, never a refund.
            fee := greatest(billing.amount(line_price, high_water)
                            - CASE WHEN line.events_count = 0 THEN 0 ELSE billing.amount(line_price, line.billed_units) END, 0);
            UPDATE billing.in_advance_usage u
            SET units = u.units + delta, billed_units = high_water, events_count = u.events_count + 1, billed_amount = u.billed_amount + fee
            WHERE u.customer_id = sub.customer_id AND u.subscription_id = sub.id AND u.charge_id = ch.id
              AND u.charge_filter_id = coalesce(filter.id, 0) AND u.grouped_by = grouped AND u.period_from = window_from;
            fee_key := billing._usage_fee_key('in_advance', ch.id, filter.id, grouped, window_from, invoice_at);
            period_to := least(bounds.to_datetime, coalesce(sub.terminated_at, 'infinity'));
            INSERT INTO billing.fees AS fe (customer_id, invoice_id, subscription_id, fee_type, fee_key, charge_id, charge_filter_id,
                                            billable_metric_code, charge_model, filter_values, grouped_by, description, units, events_count,
                                            precise_unit_amount, precise_amount, amount, invoiceable, from_datetime, to_datetime)
            VALUES (sub.customer_id, invoice_id, sub.id, 'charge', fee_key, ch.id, filter.id, ch.metric_code, ch.price ->> 'charge_model',
                    filter."values", nullif(grouped, '{}'::jsonb), coalesce(filter.invoice_display_name, ch.name),
                    high_water - line.billed_units, 1, CASE WHEN high_water = line.billed_units THEN 0 ELSE fee / (high_water - line.billed_units) END,
                    fee, billing.round_money(fee, cust.currency), ch.invoiceable, window_from, period_to)
            ON CONFLICT ON CONSTRAINT fees_billing_key DO UPDATE
            SET units = fe.units + excluded.units, events_count = fe.events_count + 1, precise_amount = fe.precise_amount + excluded.precise_amount,
                amount = billing.round_money(fe.precise_amount + excluded.precise_amount, cust.currency),
                precise_unit_amount = CASE WHEN fe.units + excluded.units = 0 THEN 0
                                           ELSE (fe.precise_amount + excluded.precise_amount) / (fe.units + excluded.units) END;
        END LOOP;
    END LOOP;
    FOR n IN 1 .. cardinality(invoices) LOOP
        PERFORM billing._total_invoice(customers[n], invoices[n]);
    END LOOP;
END $$;

REVOKE ALL ON FUNCTION billing._check_pay_in_advance(integer, billing.billable_metrics, text),
    billing._in_advance_invoice(billing.subscriptions, billing.customers),
    billing._bill_in_advance(bigint[], bigint[], bigint[], timestamptz[], numeric[], jsonb[]) FROM PUBLIC;

-- pg_dump keeps the rows (the table belongs to the extension).
SELECT pg_catalog.pg_extension_config_dump('billing.in_advance_usage', '');
