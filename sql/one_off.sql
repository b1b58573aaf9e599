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
