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
