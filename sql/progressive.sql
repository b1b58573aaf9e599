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
