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
    IF coalesce(code, '') = '' OR name IS NULL THEN
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
    CASE applies_to
    WHEN 'billing_entity' THEN
        SELECT e.id INTO target_id FROM billing.billing_entities e WHERE e.code = target;
    WHEN 'customer' THEN
        SELECT d.customer_id INTO target_id FROM billing.customer_directory d WHERE d.external_id = target;
    WHEN 'plan' THEN
        SELECT p.id INTO target_id FROM billing.plans p WHERE p.code = target;
    ELSE
        SELECT c.id INTO target_id FROM billing.charges c WHERE c.id::text = target;
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
    -- Two statements, not one query with the precedence in it: each is a plain join a
    -- distributed database runs on the customer's shard.
    IF EXISTS (SELECT 1 FROM billing.charge_taxes) THEN
        INSERT INTO billing.fee_taxes (customer_id, invoice_id, fee_id, tax_id, tax_code, tax_name, tax_rate, base_amount, precise_amount)
        SELECT fe.customer_id, fe.invoice_id, fe.id, t.id, t.code, t.name, t.rate, fe.amount, trim_scale(fe.amount * t.rate * 0.01)
        FROM billing.fees fe
        JOIN billing.charge_taxes ct ON ct.charge_id = fe.charge_id
        JOIN billing.taxes t ON t.id = ct.tax_id
        WHERE fe.customer_id = customer_id AND fe.invoice_id = invoice_id AND fe.invoiceable;
    END IF;
    IF default_taxes IS NOT NULL THEN
        INSERT INTO billing.fee_taxes (customer_id, invoice_id, fee_id, tax_id, tax_code, tax_name, tax_rate, base_amount, precise_amount)
        SELECT fe.customer_id, fe.invoice_id, fe.id, t.id, t.code, t.name, t.rate, fe.amount, trim_scale(fe.amount * t.rate * 0.01)
        FROM billing.fees fe
        JOIN billing.taxes t ON t.id = ANY (default_taxes)
        WHERE fe.customer_id = customer_id AND fe.invoice_id = invoice_id AND fe.invoiceable
          AND NOT EXISTS (SELECT 1 FROM billing.charge_taxes ct WHERE ct.charge_id = fe.charge_id);
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

-- Invoice totals with taxes; the invoice document lists them.
-- Sets an invoice's totals from its invoiceable fees (taxes, coupons, credit notes and
-- prepaid credits are zero until they exist).
CREATE OR REPLACE FUNCTION billing._total_invoice(customer_id bigint, invoice_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    fees numeric;
    taxes numeric;
BEGIN
    SELECT coalesce(sum(fe.amount), 0) INTO fees FROM billing.fees fe
    WHERE fe.customer_id = customer_id AND fe.invoice_id = invoice_id AND fe.invoiceable;
    taxes := billing._tax_fees(customer_id, invoice_id);
    UPDATE billing.invoices i
    SET fees_amount = fees, sub_total_excluding_taxes = fees, taxes_amount = taxes, sub_total_including_taxes = fees + taxes,
        total_amount = fees + taxes, refreshed_at = now()
    WHERE i.customer_id = customer_id AND i.id = invoice_id;
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
                       'details', fe.amount_details, 'taxes', lt.taxes,
                       'from', fe.from_datetime, 'to', fe.to_datetime))
                   ORDER BY fe.fee_type, fe.charge_id NULLS FIRST, fe.charge_filter_id NULLS FIRST, fe.grouped_by::text COLLATE "C" NULLS FIRST, fe.id)
            FROM billing.fees fe
            LEFT JOIN (SELECT ft.fee_id, jsonb_agg(jsonb_build_object('code', ft.tax_code, 'rate', ft.tax_rate, 'amount', ft.precise_amount)
                                                   ORDER BY ft.tax_code) AS taxes
                       FROM billing.fee_taxes ft WHERE ft.customer_id = inv.customer_id AND ft.invoice_id = inv.id
                       GROUP BY ft.fee_id) lt ON lt.fee_id = fe.id
            WHERE fe.customer_id = inv.customer_id AND fe.invoice_id = inv.id AND fe.invoiceable), '[]'),
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
-- customer_taxes, fee_taxes) are distributed by customer and colocated, so one customer's
-- rows live in one shard group; the catalog (with the taxes and their attachments to
-- entities, plans and charges), the two directories and the per-entity invoice counters
-- become reference tables, copied to every node; rejected_events and the COPY intake and staging tables stay
-- local to the coordinator, where ingestion runs.
CREATE OR REPLACE FUNCTION billing.distribute(shard_count integer DEFAULT NULL)
RETURNS TABLE (table_name text, placement text)
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    reference_tables text[] := ARRAY['billing_entities', 'billable_metrics', 'plans', 'plan_versions', 'charges',
                                     'charge_filters', 'customer_directory', 'subscription_directory', 'invoice_sequences',
                                     'taxes', 'billing_entity_taxes', 'plan_taxes', 'charge_taxes'];
    per_customer_tables text[] := ARRAY['subscriptions', 'events', 'usage_rollups', 'invoices', 'fees', 'billed_windows',
                                        'billing_failures', 'outbox', 'customer_taxes', 'fee_taxes'];
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
    billing.charge_taxes, billing.customer_taxes, billing.fee_taxes TO billing_admin;
GRANT USAGE, SELECT, UPDATE ON SEQUENCE billing.taxes_id_seq TO billing_admin;
GRANT EXECUTE ON FUNCTION billing._fee_tax_immutable(), billing._tax(text), billing._check_tax_rate(numeric),
    billing.create_tax(text, text, numeric, text), billing.update_tax(text, numeric, text, text),
    billing.set_taxes(text, text, text[]), billing._tax_fees(bigint, bigint) TO billing_admin;

COMMENT ON FUNCTION billing.distribute(integer) IS 'On a Citus coordinator: distributes pg_billing by customer in one call (customers, subscriptions, events, usage_rollups, invoices, fees, billed_windows, billing_failures, outbox, customer_taxes and fee_taxes distributed and colocated, shard_count shards each, default citus.shard_count; the catalog, the taxes and their attachments to entities, plans and charges, the directories and invoice_sequences as reference tables; rejected_events and the COPY tables local). Returns each table with its placement. 55000 without Citus or when already distributed.';
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
