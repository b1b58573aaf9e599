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
