-- Invoicing: the billing run turns each subscription's periods into invoices and their
-- fees, exactly once; drafts stay open during the billing entity's grace period, then are
-- finalized (numbered, immutable) or voided; every change is reported through the outbox.

CREATE TYPE billing.invoice_type AS ENUM ('subscription', 'one_off', 'progressive_billing', 'pay_in_advance', 'credit');
CREATE TYPE billing.invoice_status AS ENUM ('draft', 'finalized', 'voided');
CREATE TYPE billing.payment_status AS ENUM ('pending', 'succeeded', 'failed');
CREATE TYPE billing.fee_type AS ENUM ('subscription', 'charge', 'charge_minimum', 'commitment', 'adjustment', 'add_on', 'fixed_charge', 'credit');

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
    -- One invoice of each type per subscription and billing instant.
    CONSTRAINT invoices_billing_key UNIQUE (customer_id, subscription_id, billing_at, invoice_type),
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
    -- NULL on one-off invoices.
    subscription_id bigint,
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
    -- The fee's share of the invoice's coupons (5 decimals), set at finalization.
    precise_coupons_amount numeric NOT NULL DEFAULT 0,
    -- The add-on a one-off item bills.
    add_on_id bigint,
    -- Taxes named for this fee (a one-off item's), before any precedence; NULL: by precedence.
    tax_ids bigint[],
    -- What the period's progressive-billing invoices billed of this usage line, deducted.
    progressive_credit_amount numeric NOT NULL DEFAULT 0,
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

-- For the fees and the rows that hang on them (their taxes): each names its customer and
-- invoice.
CREATE FUNCTION billing._fee_immutable() RETURNS trigger
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
    WHERE i.customer_id = sub.customer_id AND i.subscription_id = sub.id AND i.billing_at = at AND i.invoice_type = 'subscription';
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

-- The events a usage window of a subscription holds now, from the day rollups of the
-- metrics its plan version charges in arrears.
CREATE FUNCTION billing._window_events(
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

-- The usage windows of a subscription's finalized invoices that hold more events now than
-- any invoice (but `invoice_id`) saw: events that arrived after their period was invoiced.
-- Only windows invoiced before `invoice_id` count: an older draft refreshed after a later
-- invoice was finalized does not take that invoice's late usage.
CREATE FUNCTION billing._late_windows(sub billing.subscriptions, cust billing.customers, invoice_id bigint)
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

-- Bills a subscription up to `as_of`: walks its plans (billing._plan_segments) and each
-- one's periods from the start, and adds, on the invoice of each billing instant, what falls
-- due there. With `only_at`, recomputes the fees of that one instant (a draft's refresh);
-- without it, bills every instant after the last one invoiced. Returns the invoices it
-- created.
CREATE FUNCTION billing._bill_periods(sub billing.subscriptions, as_of timestamptz, only_at timestamptz DEFAULT NULL)
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

-- Sets an invoice's totals from its invoiceable fees, its coupons, taxes, the credit notes
-- and the prepaid credits it consumed (the last two only from finalization on).
CREATE FUNCTION billing._total_invoice(customer_id bigint, invoice_id bigint) RETURNS void
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

-- A number with leading zeros up to `width` digits, never cut (lpad would cut 1000 to 100).
CREATE FUNCTION billing._zero_padded(n bigint, width integer) RETURNS text
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT lpad(n::text, greatest(width, length(n::text)), '0')
$$;

-- Gives a draft its coupons, credit, number, due date and finalized status.
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

-- Recomputes a draft's fees from the usage as it is now.
CREATE FUNCTION billing._refresh(inv billing.invoices) RETURNS void
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
            CASE WHEN wanted = 'draft' THEN 'finalized invoices are immutable; bill corrections on a later invoice'
                 WHEN inv.status = 'voided' THEN 'a voided invoice takes no further change'
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
    PERFORM billing._settle_purchase(inv);
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
    PERFORM billing.run_wallets(as_of);
    COMMIT;
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
    billing._add_base_fee(billing.subscriptions, billing.customers, bigint, billing.plan_versions, text, date, date, integer, timestamptz, timestamptz, text),
    billing._window_events(bigint, bigint, bigint, timestamptz, timestamptz, text),
    billing._record_window(billing.subscriptions, billing.customers, bigint, timestamptz, timestamptz, boolean, bigint),
    billing._usage_fee_key(text, bigint, bigint, jsonb, timestamptz, timestamptz),
    billing._add_usage_fees(billing.subscriptions, billing.customers, bigint, timestamptz, timestamptz, integer, integer),
    billing._late_windows(billing.subscriptions, billing.customers, bigint),
    billing._add_adjustments(billing.subscriptions, billing.customers, bigint, timestamptz),
    billing._bill_periods(billing.subscriptions, timestamptz, timestamptz),
    billing._credit_ended_plans(billing.subscriptions, billing.customers, timestamptz[], bigint[], timestamptz),
    billing._bill_plan_periods(billing.subscriptions, billing.customers, bigint, timestamptz, timestamptz, boolean, date, timestamptz, timestamptz, timestamptz),
    billing._total_invoice(bigint, bigint),
    billing._zero_padded(bigint, integer), billing._finalize(billing.invoices), billing._refresh(billing.invoices),
    billing._bill_subscription(bigint, bigint, timestamptz), billing._attempt(bigint, bigint, timestamptz, bigint), billing._invoice(bigint),
    billing._require_status(billing.invoices, billing.invoice_status, text),
    billing._period_share(numeric, integer, integer), billing._shortfall(numeric, numeric) FROM PUBLIC;
REVOKE ALL ON PROCEDURE billing.run_billing(timestamptz), billing.finalize_drafts(timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION billing.bill_subscription(text, timestamptz), billing.refresh_invoice(bigint), billing.finalize_invoice(bigint),
    billing.void_invoice(bigint), billing.set_payment_status(bigint, text) FROM PUBLIC;
