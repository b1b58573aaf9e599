-- Credit notes: corrections of a finalized invoice, per fee, with the taxes in proportion. A
-- credit note's total is refunded and/or credited; the credit is consumed by the customer's
-- later invoices at their finalization (after tax, before prepaid credits, oldest credit
-- first). Each tax of an invoice's credit notes is rounded on their running sum, so that
-- crediting every fee in full gives back exactly the invoice's taxes.
CREATE TYPE billing.credit_note_reason AS ENUM (
    'duplicated_charge', 'product_unsatisfactory', 'order_change', 'order_cancellation', 'fraudulent_charge', 'other'
);
CREATE TYPE billing.credit_status AS ENUM ('available', 'consumed', 'voided');

CREATE TABLE billing.credit_notes (
    id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id bigint NOT NULL,
    invoice_id bigint NOT NULL,
    -- The invoice's number, then -CN and the credit note's rank on it.
    number text NOT NULL,
    reason billing.credit_note_reason NOT NULL,
    description text,
    currency text NOT NULL,
    sub_total_excluding_taxes numeric NOT NULL,
    taxes_amount numeric NOT NULL,
    total_amount numeric NOT NULL,
    refund_amount numeric NOT NULL,
    credit_amount numeric NOT NULL,
    -- What is left of the credit for later invoices.
    balance_amount numeric NOT NULL,
    credit_status billing.credit_status NOT NULL,
    -- The base fee paid in advance whose unused days it gives back, after a termination or an
    -- upgrade (NULL: created by hand).
    unused_days_fee_id bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    voided_at timestamptz,
    PRIMARY KEY (customer_id, id),
    UNIQUE (customer_id, number),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES billing.invoices (customer_id, id),
    CHECK (total_amount = sub_total_excluding_taxes + taxes_amount AND total_amount = refund_amount + credit_amount),
    CHECK (refund_amount >= 0 AND credit_amount >= 0 AND balance_amount >= 0 AND balance_amount <= credit_amount)
);

-- What a credit note credits of each fee (before tax), and each tax it gives back.
CREATE TABLE billing.credit_note_items (
    customer_id bigint NOT NULL,
    credit_note_id bigint NOT NULL,
    fee_id bigint NOT NULL,
    amount numeric NOT NULL CHECK (amount > 0),
    PRIMARY KEY (customer_id, credit_note_id, fee_id),
    FOREIGN KEY (customer_id, credit_note_id) REFERENCES billing.credit_notes (customer_id, id),
    FOREIGN KEY (customer_id, fee_id) REFERENCES billing.fees (customer_id, id)
);
CREATE INDEX credit_note_items_by_fee ON billing.credit_note_items (customer_id, fee_id);

CREATE TABLE billing.credit_note_taxes (
    customer_id bigint NOT NULL,
    credit_note_id bigint NOT NULL,
    tax_id bigint NOT NULL REFERENCES billing.taxes,
    tax_code text NOT NULL,
    tax_rate numeric NOT NULL,
    base_amount numeric NOT NULL,
    -- The exact tax of the items, and the amount given back (rounded on the invoice's running sum).
    precise_amount numeric NOT NULL,
    amount numeric NOT NULL,
    PRIMARY KEY (customer_id, credit_note_id, tax_id),
    FOREIGN KEY (customer_id, credit_note_id) REFERENCES billing.credit_notes (customer_id, id)
);

-- The credit each later invoice consumed, per credit note.
CREATE TABLE billing.invoice_credit_notes (
    customer_id bigint NOT NULL,
    invoice_id bigint NOT NULL,
    credit_note_id bigint NOT NULL,
    amount numeric NOT NULL CHECK (amount > 0),
    PRIMARY KEY (customer_id, invoice_id, credit_note_id),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES billing.invoices (customer_id, id),
    FOREIGN KEY (customer_id, credit_note_id) REFERENCES billing.credit_notes (customer_id, id)
);

-- What is left creditable of each fee of an invoice (before tax): the rounded fee less its
-- progressive-billing credit and coupon share, rounded, less what credit notes took already.
CREATE FUNCTION billing._creditable(customer_id bigint, invoice_id bigint)
RETURNS TABLE (fee_id bigint, creditable numeric)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_variable
BEGIN
    RETURN QUERY
    SELECT fe.id, billing.round_money(fe.amount - fe.progressive_credit_amount - fe.precise_coupons_amount, i.currency) - coalesce(sum(cni.amount), 0)
    FROM billing.fees fe
    JOIN billing.invoices i ON i.customer_id = fe.customer_id AND i.id = fe.invoice_id
    LEFT JOIN billing.credit_note_items cni ON cni.customer_id = fe.customer_id AND cni.fee_id = fe.id
    WHERE fe.customer_id = customer_id AND fe.invoice_id = invoice_id AND fe.invoiceable
    GROUP BY fe.id, fe.amount, fe.progressive_credit_amount, fe.precise_coupons_amount, i.currency;
END $$;

-- Credits a finalized invoice. items: [{"fee_id": ..., "amount": ...}], each amount before
-- tax, at most what is left creditable of the fee (23514). The taxes are credited in
-- proportion to the fee's exact taxes; refund + credit = the credit note's total (credit
-- defaults to what is not refunded; a refund needs a paid invoice). Numbered
-- <invoice number>-CN<n>.
CREATE FUNCTION billing.create_credit_note(
    invoice_id bigint, items jsonb, reason text, refund numeric DEFAULT 0, credit numeric DEFAULT NULL, description text DEFAULT NULL
) RETURNS billing.credit_notes
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    inv billing.invoices := billing._invoice(invoice_id);
    item jsonb;
    position integer := 0;
    fee_id bigint;
    amount numeric;
    left_to_credit numeric;
    note billing.credit_notes;
    rank integer;
    invoice_left numeric;
    sub_total numeric;
    taxes numeric;
    total numeric;
BEGIN
    PERFORM billing._require_status(inv, 'finalized', 'create_credit_note');
    PERFORM billing._check_label('credit note reason', reason, enum_range(NULL::billing.credit_note_reason)::text[]);
    IF jsonb_typeof(items) IS DISTINCT FROM 'array' OR jsonb_array_length(items) = 0 THEN
        PERFORM billing._invalid('items must be a non-empty JSON array of {"fee_id", "amount"}', format('got %s', items),
            'write [{"fee_id": 12, "amount": "10.00"}]');
    END IF;
    IF (SELECT count(DISTINCT i ->> 'fee_id') <> count(*) FROM jsonb_array_elements(items) i) THEN
        PERFORM billing._invalid('items name a fee twice', format('got %s', items), 'give one item per fee');
    END IF;
    IF refund IS NULL OR refund < 0 OR refund <> billing.round_money(refund, inv.currency)
       OR credit < 0 OR credit <> billing.round_money(credit, inv.currency) THEN
        PERFORM billing._invalid(format('refund and credit are amounts of 0 or more with the decimals of %s', inv.currency),
            format('got refund %s and credit %s', refund, credit), 'give the refund; the credit defaults to the rest');
    END IF;
    -- The invoice's row lock (billing._invoice) makes its credit notes take turns: the rank is
    -- free, and what is left creditable cannot change underneath.
    SELECT count(*) + 1 INTO rank FROM billing.credit_notes cn WHERE cn.customer_id = inv.customer_id AND cn.invoice_id = inv.id;
    INSERT INTO billing.credit_notes (customer_id, invoice_id, number, reason, description, currency, sub_total_excluding_taxes,
                                      taxes_amount, total_amount, refund_amount, credit_amount, balance_amount, credit_status)
    VALUES (inv.customer_id, inv.id, format('%s-CN%s', inv.number, rank), reason::billing.credit_note_reason, description,
            inv.currency, 0, 0, 0, 0, 0, 0, 'available')
    RETURNING * INTO note;
    FOR item IN SELECT value FROM jsonb_array_elements(items) LOOP
        position := position + 1;
        BEGIN
            fee_id := (item ->> 'fee_id')::bigint;
            amount := (item ->> 'amount')::numeric;
        EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
            fee_id := NULL;
        END;
        IF jsonb_typeof(item) IS DISTINCT FROM 'object' OR fee_id IS NULL OR NOT (amount > 0 AND amount < 'Infinity')
           OR amount <> billing.round_money(amount, inv.currency) THEN
            PERFORM billing._invalid(format('items[%s] needs a fee_id and a positive amount with the currency''s decimals', position),
                format('got %s', item), 'write {"fee_id": 12, "amount": "10.00"}');
        END IF;
        SELECT c.creditable INTO left_to_credit FROM billing._creditable(inv.customer_id, inv.id) c WHERE c.fee_id = fee_id;
        IF NOT FOUND THEN
            PERFORM billing._raise('23503', format('fee %s is not an invoiced fee of invoice %s', fee_id, inv.id),
                format('items[%s]', position), 'list the invoice''s fees with billing.invoice_document');
        END IF;
        IF amount > left_to_credit THEN
            PERFORM billing._raise('23514', format('items[%s] credits %s of fee %s, of which %s is left creditable', position,
                                                   amount, fee_id, left_to_credit),
                format('fee %s of invoice %s', fee_id, inv.id), 'credit at most what is left of the fee (before tax)');
        END IF;
        INSERT INTO billing.credit_note_items (customer_id, credit_note_id, fee_id, amount)
        VALUES (inv.customer_id, note.id, fee_id, amount);
    END LOOP;
    -- Each tax: the exact tax of the items (item × rate: in proportion to the fee's exact tax,
    -- its base × rate), rounded on the running sum of the invoice's credit notes.
    INSERT INTO billing.credit_note_taxes (customer_id, credit_note_id, tax_id, tax_code, tax_rate, base_amount, precise_amount, amount)
    SELECT inv.customer_id, note.id, t.tax_id, t.tax_code, t.tax_rate, t.base_amount, t.precise_amount,
           billing.round_money(t.precise_amount + coalesce(earlier.precise_amount, 0), inv.currency) - coalesce(earlier.amount, 0)
    FROM (SELECT ft.tax_id, ft.tax_code, ft.tax_rate, sum(cni.amount) AS base_amount,
                 sum(cni.amount * ft.tax_rate * 0.01) AS precise_amount
          FROM billing.credit_note_items cni
          JOIN billing.fee_taxes ft ON ft.customer_id = cni.customer_id AND ft.fee_id = cni.fee_id
          WHERE cni.customer_id = inv.customer_id AND cni.credit_note_id = note.id
          GROUP BY 1, 2, 3) t
    LEFT JOIN (SELECT cnt.tax_id, sum(cnt.precise_amount) AS precise_amount, sum(cnt.amount) AS amount
               FROM billing.credit_note_taxes cnt
               JOIN billing.credit_notes cn ON cn.customer_id = cnt.customer_id AND cn.id = cnt.credit_note_id
               WHERE cn.customer_id = inv.customer_id AND cn.invoice_id = inv.id AND cn.id <> note.id
               GROUP BY 1) earlier ON earlier.tax_id = t.tax_id;
    SELECT coalesce(sum(cni.amount), 0) INTO sub_total FROM billing.credit_note_items cni
    WHERE cni.customer_id = inv.customer_id AND cni.credit_note_id = note.id;
    -- However its fees add up (negative late usage, coupon shares rounded per fee), the
    -- invoice's credit notes never credit more than it billed before tax.
    SELECT inv.sub_total_excluding_taxes - coalesce(sum(cni.amount), 0) INTO invoice_left
    FROM billing.credit_note_items cni JOIN billing.credit_notes cn ON cn.customer_id = cni.customer_id AND cn.id = cni.credit_note_id
    WHERE cn.customer_id = inv.customer_id AND cn.invoice_id = inv.id AND cn.id <> note.id;
    IF sub_total > invoice_left THEN
        PERFORM billing._raise('23514', format('the items credit %s of invoice %s, of which %s is left creditable', sub_total, inv.id,
                                               greatest(invoice_left, 0)),
            format('invoice %s: %s before tax, less earlier credit notes', inv.id, inv.sub_total_excluding_taxes),
            'credit at most what is left of the invoice (before tax)');
    END IF;
    SELECT coalesce(sum(cnt.amount), 0) INTO taxes FROM billing.credit_note_taxes cnt
    WHERE cnt.customer_id = inv.customer_id AND cnt.credit_note_id = note.id;
    total := sub_total + taxes;
    IF refund > total OR (credit IS NOT NULL AND refund + credit <> total) THEN
        PERFORM billing._invalid(format('refund and credit must add up to the credit note''s total, %s', total),
            format('got refund %s and credit %s', refund, credit), 'give the refund; the credit defaults to the rest');
    END IF;
    IF refund > 0 AND inv.payment_status <> 'succeeded' THEN
        PERFORM billing._raise('55000', format('invoice %s is not paid: nothing to refund', inv.id),
            format('its payment status is %s', inv.payment_status), 'credit the amount instead, or record the payment first');
    END IF;
    UPDATE billing.credit_notes cn
    SET sub_total_excluding_taxes = sub_total, taxes_amount = taxes, total_amount = total, refund_amount = refund,
        credit_amount = total - refund, balance_amount = total - refund,
        credit_status = CASE WHEN total - refund > 0 THEN 'available'::billing.credit_status ELSE 'consumed' END
    WHERE cn.customer_id = inv.customer_id AND cn.id = note.id
    RETURNING * INTO note;
    PERFORM billing._emit(inv.customer_id, 'credit_note.created',
        jsonb_build_object('credit_note_id', note.id, 'number', note.number, 'invoice_id', inv.id, 'total_amount', note.total_amount,
                           'refund_amount', note.refund_amount, 'credit_amount', note.credit_amount, 'currency', note.currency));
    RETURN note;
END $$;

-- Gives up what is left of a credit note's credit: later invoices no longer consume it.
CREATE FUNCTION billing.void_credit_note(credit_note_id bigint) RETURNS billing.credit_notes
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    owner bigint;
    voided billing.credit_notes;
BEGIN
    SELECT cn.customer_id INTO owner FROM billing.credit_notes cn WHERE cn.id = credit_note_id;
    UPDATE billing.credit_notes cn SET balance_amount = 0, credit_status = 'voided', voided_at = now()
    WHERE cn.customer_id = owner AND cn.id = credit_note_id AND cn.credit_status = 'available'
    RETURNING * INTO voided;
    IF NOT FOUND THEN
        IF owner IS NULL THEN
            PERFORM billing._unknown('credit note', credit_note_id::text, 'list credit notes in billing_bi.credit_notes');
        END IF;
        PERFORM billing._raise('55000', format('credit note %s has no credit left to void', credit_note_id),
            'its credit is consumed or voided already', 'nothing to do');
    END IF;
    RETURN voided;
END $$;

-- The credit note for the unused days of a base fee paid in advance, when its plan ends
-- early: from first_unused_day (the day after a termination, the day of an upgrade) to the
-- period's end (plan amount / period days x days, pricing.md), less the fee's coupon share,
-- with its taxes, at most what is left creditable of the fee. `within` is an instant of the
-- plan's last period (the termination, or the instant before the change). Once per fee, and
-- only for a fee on a finalized invoice.
CREATE FUNCTION billing._credit_unused_days(
    sub billing.subscriptions, cust billing.customers, plan_version_id bigint, within timestamptz, first_unused_day date
) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    plan billing.plan_versions;
    fee billing.fees;
    period record;
    unused numeric;
    left_to_credit numeric;
    item numeric;
    note billing.credit_notes;
BEGIN
    SELECT * INTO plan FROM billing.plan_versions v WHERE v.id = plan_version_id;
    IF NOT plan.pay_in_advance THEN
        RETURN;
    END IF;
    -- The plan's own fee (a later plan's starts after `within`).
    SELECT fe.* INTO fee FROM billing.fees fe JOIN billing.invoices i ON i.customer_id = fe.customer_id AND i.id = fe.invoice_id
    WHERE fe.customer_id = sub.customer_id AND fe.subscription_id = sub.id AND fe.fee_type = 'subscription' AND fe.amount > 0
      AND fe.from_datetime <= within AND within <= fe.to_datetime AND i.status = 'finalized'
    ORDER BY fe.from_datetime DESC LIMIT 1;
    IF NOT FOUND OR EXISTS (SELECT 1 FROM billing.credit_notes cn WHERE cn.customer_id = sub.customer_id AND cn.unused_days_fee_id = fee.id) THEN
        RETURN;
    END IF;
    SELECT * INTO period FROM billing._period_dates(plan.interval::text, sub.billing_time::text,
        (coalesce(sub.started_at, sub.subscription_at) AT TIME ZONE cust.timezone)::date, (within AT TIME ZONE cust.timezone)::date);
    unused := billing._period_share(plan.amount, greatest(period.to_date - first_unused_day + 1, 0), period.to_date - period.from_date + 1);
    SELECT c.creditable INTO left_to_credit FROM billing._creditable(sub.customer_id, fee.invoice_id) c WHERE c.fee_id = fee.id;
    item := least(billing.round_money(unused * (1 - fee.precise_coupons_amount / fee.amount), cust.currency), left_to_credit);
    IF item <= 0 THEN
        RETURN;
    END IF;
    note := billing.create_credit_note(fee.invoice_id, jsonb_build_array(jsonb_build_object('fee_id', fee.id, 'amount', item)),
        CASE WHEN sub.terminated_at IS NOT NULL AND within = sub.terminated_at THEN 'order_cancellation' ELSE 'order_change' END::text,
        description => format('unused days from %s', first_unused_day));
    UPDATE billing.credit_notes cn SET unused_days_fee_id = fee.id WHERE cn.customer_id = note.customer_id AND cn.id = note.id;
END $$;

-- Consumes the customer's available credit notes (oldest first) on an invoice being
-- finalized, up to what its sub-total including taxes leaves. Returns whether any was used.
CREATE FUNCTION billing._apply_credit_notes(inv billing.invoices) RETURNS boolean
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    note record;
    left_to_pay numeric;
    used numeric;
    applied_any boolean := false;
BEGIN
    PERFORM 1 FROM billing.credit_notes cn WHERE cn.customer_id = inv.customer_id AND cn.credit_status = 'available' FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT i.sub_total_including_taxes INTO left_to_pay FROM billing.invoices i WHERE i.customer_id = inv.customer_id AND i.id = inv.id;
    FOR note IN
        SELECT cn.id, cn.balance_amount FROM billing.credit_notes cn
        WHERE cn.customer_id = inv.customer_id AND cn.credit_status = 'available' AND cn.currency = inv.currency
        ORDER BY cn.created_at, cn.id
    LOOP
        EXIT WHEN left_to_pay <= 0;
        used := least(note.balance_amount, left_to_pay);
        INSERT INTO billing.invoice_credit_notes (customer_id, invoice_id, credit_note_id, amount)
        VALUES (inv.customer_id, inv.id, note.id, used);
        UPDATE billing.credit_notes cn
        SET balance_amount = cn.balance_amount - used,
            credit_status = CASE WHEN cn.balance_amount = used THEN 'consumed'::billing.credit_status ELSE cn.credit_status END
        WHERE cn.customer_id = inv.customer_id AND cn.id = note.id;
        left_to_pay := left_to_pay - used;
        applied_any := true;
    END LOOP;
    RETURN applied_any;
END $$;

REVOKE ALL ON FUNCTION billing._creditable(bigint, bigint), billing.create_credit_note(bigint, jsonb, text, numeric, numeric, text),
    billing.void_credit_note(bigint), billing._apply_credit_notes(billing.invoices),
    billing._credit_unused_days(billing.subscriptions, billing.customers, bigint, timestamptz, date) FROM PUBLIC;

-- pg_dump keeps the rows (the tables belong to the extension).
SELECT pg_catalog.pg_extension_config_dump('billing.credit_notes', '');
SELECT pg_catalog.pg_extension_config_dump('billing.credit_notes_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('billing.credit_note_items', '');
SELECT pg_catalog.pg_extension_config_dump('billing.credit_note_taxes', '');
SELECT pg_catalog.pg_extension_config_dump('billing.invoice_credit_notes', '');
