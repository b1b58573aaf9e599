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
