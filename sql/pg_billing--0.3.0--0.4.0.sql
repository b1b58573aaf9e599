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
CREATE FUNCTION billing._fee_tax_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    invoice_status billing.invoice_status;
BEGIN
    SELECT i.status INTO invoice_status FROM billing.invoices i WHERE i.customer_id = OLD.customer_id AND i.id = OLD.invoice_id;
    IF invoice_status = 'draft' THEN
        RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    PERFORM billing._raise('55000', format('the taxes of %s invoice %s cannot be changed', invoice_status, OLD.invoice_id),
        format('%s of a tax of fee %s', TG_OP, OLD.fee_id), 'correct a finalized invoice with a credit note or a later invoice');
    RETURN NULL;
END $$;
CREATE TRIGGER fee_taxes_immutable BEFORE UPDATE OR DELETE ON billing.fee_taxes
FOR EACH ROW EXECUTE FUNCTION billing._fee_tax_immutable();

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
-- external id), a plan (by code) or a charge (by id), replacing those it had; an empty
-- array removes them. Returns the codes now set, in order.
CREATE FUNCTION billing.set_taxes(applies_to text, target text, tax_codes text[])
RETURNS text[]
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    tax_ids bigint[];
    target_id bigint;
BEGIN
    PERFORM billing._check_label('tax target', applies_to, ARRAY['billing_entity', 'customer', 'plan', 'charge']);
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
    ELSE
        SELECT c.id INTO target_id FROM billing.charges c WHERE c.id::text = target FOR UPDATE;
    END CASE;
    IF target_id IS NULL THEN
        PERFORM billing._unknown(replace(applies_to, '_', ' '), target,
            'a billing entity or plan by its code, a customer by its external id, a charge by its id');
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
    ELSE
        DELETE FROM billing.charge_taxes x WHERE x.charge_id = target_id;
        INSERT INTO billing.charge_taxes (charge_id, tax_id) SELECT target_id, unnest(tax_ids);
    END CASE;
    RETURN (SELECT coalesce(array_agg(t.code ORDER BY t.code), '{}') FROM billing.taxes t WHERE t.id = ANY (tax_ids));
END $$;

-- Taxes a draft's invoiced fees anew and returns the invoice's tax total: each tax's exact
-- sum over its fees, rounded once to the currency, added up. A fee whose charge has taxes
-- takes those; every other fee the first of the plan's, the customer's and the billing
-- entity's that are set.
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
    total numeric;
BEGIN
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
    IF cardinality(map_tax) > 0 THEN
        INSERT INTO billing.fee_taxes (customer_id, invoice_id, fee_id, tax_id, tax_code, tax_name, tax_rate, base_amount, precise_amount)
        SELECT fe.customer_id, fe.invoice_id, fe.id, t.id, t.code, t.name, t.rate, fe.amount - fe.precise_coupons_amount,
               trim_scale((fe.amount - fe.precise_coupons_amount) * t.rate * 0.01)
        FROM billing.fees fe
        JOIN unnest(map_charge, map_tax) AS applicable(charge_id, tax_id)
          ON applicable.charge_id = CASE WHEN fe.charge_id = ANY (map_charge) THEN fe.charge_id ELSE 0 END
        JOIN billing.taxes t ON t.id = applicable.tax_id
        WHERE fe.customer_id = customer_id AND fe.invoice_id = invoice_id AND fe.invoiceable;
    END IF;
    SELECT coalesce(sum(billing.round_money(per_tax.amount, inv.currency)), 0) INTO total
    FROM (SELECT sum(ft.precise_amount) AS amount FROM billing.fee_taxes ft
          WHERE ft.customer_id = customer_id AND ft.invoice_id = invoice_id GROUP BY ft.tax_id) per_tax;
    RETURN total;
END $$;

REVOKE ALL ON FUNCTION billing._fee_tax_immutable(), billing._tax(text), billing._check_tax_rate(numeric),
    billing._tax_fees(bigint, bigint) FROM PUBLIC;

-- pg_dump keeps the rows (the tables belong to the extension).
SELECT pg_catalog.pg_extension_config_dump('billing.taxes', '');
SELECT pg_catalog.pg_extension_config_dump('billing.taxes_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.billing_entity_taxes', '');
SELECT pg_catalog.pg_extension_config_dump('billing.plan_taxes', '');
SELECT pg_catalog.pg_extension_config_dump('billing.charge_taxes', '');
SELECT pg_catalog.pg_extension_config_dump('billing.customer_taxes', '');
SELECT pg_catalog.pg_extension_config_dump('billing.fee_taxes', '');

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
    SELECT c.* INTO cust FROM billing.customer_directory d JOIN billing.customers c ON c.id = d.customer_id
    WHERE d.external_id = customer;
    IF NOT FOUND THEN
        PERFORM billing._unknown('customer', customer, 'create it with billing.create_customer');
    END IF;
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
-- The caller recomputes the invoice's totals.
CREATE FUNCTION billing._apply_coupons(inv billing.invoices) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    plan_id bigint;
    applied record;
    metric_codes text[];
    base numeric;
    discount numeric;
    finished_at timestamptz := now();
BEGIN
    SELECT v.plan_id INTO plan_id FROM billing.subscriptions s JOIN billing.plan_versions v ON v.id = s.plan_version_id
    WHERE s.customer_id = inv.customer_id AND s.id = inv.subscription_id;
    -- Two invoices of the customer finalized at once take turns on its coupons.
    PERFORM 1 FROM billing.applied_coupons a WHERE a.customer_id = inv.customer_id AND a.status = 'active' FOR UPDATE;
    FOR applied IN
        SELECT a.id, a.amount, a.amount_remaining, a.percentage_rate, c.id AS coupon_id, c.code, c.name, c.coupon_type,
               EXISTS (SELECT 1 FROM billing.coupon_billable_metrics x WHERE x.coupon_id = c.id) AS metric_limited,
               EXISTS (SELECT 1 FROM billing.coupon_plans x WHERE x.coupon_id = c.id) AS plan_limited,
               EXISTS (SELECT 1 FROM billing.coupon_plans x WHERE x.coupon_id = c.id AND x.plan_id = plan_id) AS plan_covered,
               a.created_at
        FROM billing.applied_coupons a JOIN billing.coupons c ON c.id = a.coupon_id
        WHERE a.customer_id = inv.customer_id AND a.status = 'active'
        ORDER BY metric_limited DESC, plan_limited DESC, a.created_at, a.id
    LOOP
        CONTINUE WHEN applied.plan_limited AND NOT applied.plan_covered;
        metric_codes := CASE WHEN applied.metric_limited THEN ARRAY(
            SELECT m.code FROM billing.coupon_billable_metrics x JOIN billing.billable_metrics m ON m.id = x.billable_metric_id
            WHERE x.coupon_id = applied.coupon_id) END;
        SELECT coalesce(sum(greatest(fe.amount - fe.precise_coupons_amount, 0)), 0) INTO base
        FROM billing.fees fe
        WHERE fe.customer_id = inv.customer_id AND fe.invoice_id = inv.id AND fe.invoiceable
          AND (metric_codes IS NULL OR fe.billable_metric_code = ANY (metric_codes));
        CONTINUE WHEN base <= 0;
        -- Fixed amounts have the currency's decimals (create_coupon, apply_coupon): rounding
        -- them only writes them with those decimals.
        discount := billing.round_money(CASE applied.coupon_type
            WHEN 'fixed_amount' THEN least(coalesce(applied.amount_remaining, applied.amount), base)
            ELSE base * applied.percentage_rate * 0.01 END, inv.currency);
        CONTINUE WHEN discount <= 0;
        UPDATE billing.fees fe
        SET precise_coupons_amount = fe.precise_coupons_amount
            + least(fe.amount - fe.precise_coupons_amount, round(discount * (fe.amount - fe.precise_coupons_amount) / base, 5))
        WHERE fe.customer_id = inv.customer_id AND fe.invoice_id = inv.id AND fe.invoiceable
          AND (metric_codes IS NULL OR fe.billable_metric_code = ANY (metric_codes))
          AND fe.amount - fe.precise_coupons_amount > 0;
        INSERT INTO billing.invoice_coupons (customer_id, invoice_id, applied_coupon_id, coupon_code, coupon_name, amount)
        VALUES (inv.customer_id, inv.id, applied.id, applied.code, applied.name, discount);
        UPDATE billing.applied_coupons a
        SET amount_remaining = a.amount_remaining - CASE WHEN a.frequency = 'once' AND a.amount_remaining IS NOT NULL THEN discount ELSE 0 END,
            frequency_duration_remaining = a.frequency_duration_remaining - CASE WHEN a.frequency = 'recurring' THEN 1 ELSE 0 END,
            status = CASE WHEN a.frequency = 'once' AND (a.amount_remaining IS NULL OR a.amount_remaining = discount) THEN 'terminated'
                          WHEN a.frequency = 'recurring' AND a.frequency_duration_remaining = 1 THEN 'terminated'
                          ELSE a.status END,
            terminated_at = CASE WHEN (a.frequency = 'once' AND (a.amount_remaining IS NULL OR a.amount_remaining = discount))
                                   OR (a.frequency = 'recurring' AND a.frequency_duration_remaining = 1) THEN finished_at END
        WHERE a.customer_id = inv.customer_id AND a.id = applied.id;
    END LOOP;
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

-- Invoice totals with coupons and taxes; coupons come off at finalization; the invoice document lists both.
-- Sets an invoice's totals from its invoiceable fees (taxes, coupons, credit notes and
-- prepaid credits are zero until they exist).
CREATE OR REPLACE FUNCTION billing._total_invoice(customer_id bigint, invoice_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    fees numeric;
    coupons numeric;
    taxes numeric;
BEGIN
    SELECT coalesce(sum(fe.amount), 0) INTO fees FROM billing.fees fe
    WHERE fe.customer_id = customer_id AND fe.invoice_id = invoice_id AND fe.invoiceable;
    SELECT coalesce(sum(ic.amount), 0) INTO coupons FROM billing.invoice_coupons ic
    WHERE ic.customer_id = customer_id AND ic.invoice_id = invoice_id;
    taxes := billing._tax_fees(customer_id, invoice_id);
    UPDATE billing.invoices i
    SET fees_amount = fees, coupons_amount = coupons, sub_total_excluding_taxes = fees - coupons, taxes_amount = taxes,
        sub_total_including_taxes = fees - coupons + taxes, total_amount = fees - coupons + taxes, refreshed_at = now()
    WHERE i.customer_id = customer_id AND i.id = invoice_id;
END $$;

-- Gives a draft its coupons, number, due date and finalized status.
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
    -- Coupons come off at finalization, never on a draft (pricing.md).
    PERFORM billing._apply_coupons(inv);
    PERFORM billing._total_invoice(inv.customer_id, inv.id);
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
    RETURN finalized;
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
                       'details', fe.amount_details, 'coupons_amount', nullif(fe.precise_coupons_amount, 0), 'taxes', lt.taxes,
                       'from', fe.from_datetime, 'to', fe.to_datetime))
                   ORDER BY fe.fee_type, fe.charge_id NULLS FIRST, fe.charge_filter_id NULLS FIRST, fe.grouped_by::text COLLATE "C" NULLS FIRST, fe.id)
            FROM billing.fees fe
            LEFT JOIN (SELECT ft.fee_id, jsonb_agg(jsonb_build_object('code', ft.tax_code, 'rate', ft.tax_rate, 'amount', ft.precise_amount)
                                                   ORDER BY ft.tax_code) AS taxes
                       FROM billing.fee_taxes ft WHERE ft.customer_id = inv.customer_id AND ft.invoice_id = inv.id
                       GROUP BY ft.fee_id) lt ON lt.fee_id = fe.id
            WHERE fe.customer_id = inv.customer_id AND fe.invoice_id = inv.id AND fe.invoiceable), '[]'),
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

-- billing.distribute() places the tax tables.
-- Scale-out on Citus: billing.distribute() turns a pg_billing database on a Citus
-- coordinator into a distributed one. Per-customer tables (customers, subscriptions,
-- events, usage_rollups, invoices, fees, billed_windows, billing_failures, outbox,
-- customer_taxes, fee_taxes, applied_coupons, invoice_coupons) are distributed by customer
-- and colocated, so one customer's rows live in one shard group; the catalog (with the
-- taxes, their attachments to entities, plans and charges, and the coupons), the two
-- directories and the per-entity invoice counters become reference tables, copied to every
-- node; rejected_events and the COPY intake and staging tables stay local to the
-- coordinator, where ingestion runs.
CREATE OR REPLACE FUNCTION billing.distribute(shard_count integer DEFAULT NULL)
RETURNS TABLE (table_name text, placement text)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    reference_tables text[] := ARRAY['billing_entities', 'billable_metrics', 'plans', 'plan_versions', 'charges',
                                     'charge_filters', 'customer_directory', 'subscription_directory', 'invoice_sequences',
                                     'taxes', 'billing_entity_taxes', 'plan_taxes', 'charge_taxes', 'coupons', 'coupon_plans',
                                     'coupon_billable_metrics'];
    per_customer_tables text[] := ARRAY['subscriptions', 'events', 'usage_rollups', 'invoices', 'fees', 'billed_windows',
                                        'billing_failures', 'outbox', 'customer_taxes', 'fee_taxes', 'applied_coupons',
                                        'invoice_coupons'];
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
    billing.coupon_billable_metrics, billing.applied_coupons, billing.invoice_coupons TO billing_admin;
GRANT USAGE, SELECT, UPDATE ON SEQUENCE billing.taxes_id_seq, billing.coupons_id_seq, billing.applied_coupons_id_seq TO billing_admin;
GRANT EXECUTE ON FUNCTION billing._fee_tax_immutable(), billing._tax(text), billing._check_tax_rate(numeric),
    billing.create_tax(text, text, numeric, text), billing.update_tax(text, numeric, text, text),
    billing.set_taxes(text, text, text[]), billing._tax_fees(bigint, bigint), billing._coupon(text),
    billing.create_coupon(text, text, text, numeric, text, numeric, text, integer, timestamptz, text[], text[]),
    billing.apply_coupon(text, text, numeric), billing.terminate_coupon(text, text), billing._apply_coupons(billing.invoices)
    TO billing_admin;

COMMENT ON FUNCTION billing.distribute(integer) IS 'On a Citus coordinator: distributes pg_billing by customer in one call (customers, subscriptions, events, usage_rollups, invoices, fees, billed_windows, billing_failures, outbox, customer_taxes, fee_taxes, applied_coupons and invoice_coupons distributed and colocated, shard_count shards each, default citus.shard_count; the catalog, the taxes and their attachments to entities, plans and charges, the coupons and their limits, the directories and invoice_sequences as reference tables; rejected_events and the COPY tables local). Returns each table with its placement. 55000 without Citus or when already distributed.';
COMMENT ON TABLE billing.taxes IS 'Taxes: code, name, rate in percent (0 to 100) and description. A rate change applies to invoices whose totals are computed afterwards, never to finalized ones.';
COMMENT ON TABLE billing.billing_entity_taxes IS 'The default taxes of a billing entity''s customers (the last in precedence: charge, plan, customer, billing entity).';
COMMENT ON TABLE billing.plan_taxes IS 'The taxes of a plan''s fees (base, usage without charge taxes, minimums and commitment), before the customer''s and the entity''s.';
COMMENT ON TABLE billing.charge_taxes IS 'The taxes of a charge''s fees, first in precedence.';
COMMENT ON TABLE billing.customer_taxes IS 'The taxes of a customer''s fees when neither their charge nor their plan has taxes.';
COMMENT ON TABLE billing.fee_taxes IS 'Each tax on each invoiced fee, with the tax''s code, name and rate when the invoice''s totals were computed; base_amount is the rounded fee, precise_amount = base_amount x rate / 100 exactly. The invoice rounds each tax''s sum once. Immutable once the invoice is finalized.';
COMMENT ON FUNCTION billing.create_tax(text, text, numeric, text) IS 'Creates a tax: code (unique), name, rate in percent (0 to 100; 22023 otherwise), description. 23505 if the code exists.';
COMMENT ON FUNCTION billing.update_tax(text, numeric, text, text) IS 'Changes a tax''s rate, name or description (what is NULL stays). Invoices whose totals are computed afterwards use it: new invoices, drafts refreshed or finalized; never finalized ones. 23503 unknown tax, 22023 bad rate.';
COMMENT ON FUNCTION billing.set_taxes(text, text, text[]) IS 'Sets the taxes of a billing_entity (by code), customer (by external id), plan (by code) or charge (by id), replacing those it had (an empty array removes them); returns the codes now set. 22023 unknown target kind, 23503 unknown target or tax.';
COMMENT ON FUNCTION billing._tax(text) IS 'Private: the tax with this code, or 23503.';
COMMENT ON FUNCTION billing._check_tax_rate(numeric) IS 'Private: the rate if it is a percentage from 0 to 100, else 22023.';
COMMENT ON FUNCTION billing._tax_fees(bigint, bigint) IS 'Private: taxes a draft''s invoiced fees anew (charge taxes, else the first set of plan, customer and billing entity) and returns the invoice''s tax total, each tax''s exact sum rounded once.';
COMMENT ON FUNCTION billing._fee_tax_immutable() IS 'Private: trigger refusing changes to the taxes of finalized and voided invoices (55000).';
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
