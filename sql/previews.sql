-- Previews and verification. A preview is the invoice a subscription would get, computed by
-- the billing code itself and rolled back, so that a preview and the invoice the run creates
-- later cannot disagree. A verification recomputes a finalized invoice's usage from the raw
-- events (not the day rollups it was billed from) and checks its arithmetic.

-- The invoice the subscription would get at the end of the billing period that holds as_of,
-- from the usage recorded so far, finalized as the run would finalize it (coupons, taxes);
-- under another plan's current version when `plan` is given (what-if re-rating of the real
-- usage). Everything it computes is rolled back: nothing is written, no number is used, no
-- outbox event is sent. NULL when the subscription has nothing left to invoice.
CREATE FUNCTION billing.preview_invoice(external_subscription_id text, as_of timestamptz DEFAULT now(), plan text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    sub billing.subscriptions := billing._subscription(external_subscription_id);
    cust billing.customers;
    what_if billing.plan_versions;
    billed_plan bigint;
    last_billed timestamptz;
    bounds record;
    bill_at timestamptz;
    preview billing.invoices;
    draft billing.invoices;
    document jsonb;
BEGIN
    IF as_of IS NULL OR NOT isfinite(as_of) THEN
        PERFORM billing._invalid('as_of must be an instant', format('got %s', as_of), 'give an instant of the period to preview, or leave it to now()');
    END IF;
    SELECT * INTO cust FROM billing.customers c WHERE c.id = sub.customer_id;
    IF plan IS NOT NULL THEN
        what_if := billing._plan_version(plan);
        IF what_if.currency <> cust.currency THEN
            PERFORM billing._invalid(format('plan "%s" is priced in %s, customer "%s" is billed in %s', plan, what_if.currency,
                                            cust.external_id, cust.currency),
                format('got plan %s', plan), 'preview a plan priced in the customer''s currency');
        END IF;
    END IF;
    billed_plan := coalesce(what_if.id, ((billing._in_force(sub, as_of)).billed).plan_version_id);
    SELECT * INTO bounds FROM billing.period_bounds(
        (SELECT v.interval::text FROM billing.plan_versions v WHERE v.id = billed_plan),
        sub.billing_time::text, (coalesce(sub.started_at, sub.subscription_at) AT TIME ZONE cust.timezone)::date,
        greatest(as_of, coalesce(sub.started_at, sub.subscription_at)), cust.timezone);
    -- The period's close, or the termination; once the termination has passed, the run bills
    -- what is left (late usage) at as_of.
    bill_at := CASE WHEN sub.terminated_at <= as_of THEN as_of
                    ELSE least(bounds.to_datetime + interval '1 microsecond', coalesce(sub.terminated_at, 'infinity')) END;
    BEGIN
        -- The customer's drafts due before are finalized first, as the run would: they take
        -- coupons and credit before this invoice does.
        FOR draft IN
            SELECT * FROM billing.invoices i
            WHERE i.customer_id = sub.customer_id AND i.status = 'draft' AND i.billing_at < bill_at ORDER BY i.billing_at, i.id
        LOOP
            PERFORM billing.finalize_invoice(draft.id);
        END LOOP;
        IF what_if.id IS NOT NULL THEN
            -- What is not invoiced yet is re-rated on the what-if plan: all of it before the
            -- first invoice; otherwise, as a change just after the last invoice (its instant
            -- kept apart from a change invoiced at that instant), pending changes set aside.
            SELECT max(i.billing_at) INTO last_billed FROM billing.invoices i
            WHERE i.customer_id = sub.customer_id AND i.subscription_id = sub.id AND i.invoice_type = 'subscription';
            DELETE FROM billing.plan_changes pc
            WHERE pc.customer_id = sub.customer_id AND pc.subscription_id = sub.id AND pc.effective_at > coalesce(last_billed, '-infinity');
            IF last_billed IS NULL THEN
                UPDATE billing.subscriptions s SET plan_version_id = what_if.id WHERE s.customer_id = sub.customer_id AND s.id = sub.id;
            ELSE
                billed_plan := ((billing._in_force(sub, last_billed)).billed).plan_version_id;
                INSERT INTO billing.plan_changes (customer_id, subscription_id, effective_at, from_plan_version_id, to_plan_version_id, kind)
                VALUES (sub.customer_id, sub.id, last_billed + interval '1 microsecond', billed_plan, what_if.id, 'upgrade');
            END IF;
        END IF;
        SELECT * INTO preview FROM billing._bill_subscription(sub.customer_id, sub.id, bill_at) i
        ORDER BY i.billing_at DESC LIMIT 1;
        IF preview.id IS NOT NULL THEN
            IF preview.status = 'draft' THEN
                preview := billing._finalize(preview);
            END IF;
            document := billing.invoice_document(preview.id);
        END IF;
        -- Undoes everything above; the variables keep what was computed.
        RAISE EXCEPTION USING ERRCODE = 'BPRVW';
    EXCEPTION WHEN SQLSTATE 'BPRVW' THEN
        NULL;
    END;
    IF document IS NULL THEN
        RETURN NULL;
    END IF;
    -- What only a real invoice has: its id, number and finalization.
    RETURN document - ARRAY['id', 'number', 'finalized_at', 'payment_status'] || jsonb_build_object('status', 'preview');
END $$;

-- Each verification of an invoice, with its report (billing.verify_invoice).
CREATE TABLE billing.invoice_verifications (
    id bigint GENERATED ALWAYS AS IDENTITY,
    customer_id bigint NOT NULL,
    invoice_id bigint NOT NULL,
    verified_at timestamptz NOT NULL DEFAULT now(),
    drifting_lines integer NOT NULL,
    totals_consistent boolean NOT NULL,
    report jsonb NOT NULL,
    PRIMARY KEY (customer_id, id),
    FOREIGN KEY (customer_id, invoice_id) REFERENCES billing.invoices (customer_id, id)
);
CREATE INDEX invoice_verifications_by_invoice ON billing.invoice_verifications (customer_id, invoice_id, verified_at);

-- Recomputes a finalized invoice and records what it found. Usage: every usage line the
-- invoice billed (its charge fees, on the plan version they were billed on) is priced again
-- from the raw events and compared with everything billed for that line (the fee and any
-- later adjustments of it); a line drifts when the amounts or units differ, or when the
-- events price a line that was never billed. Arithmetic: fees_amount is the sum of the
-- rounded invoiced fees, coupons_amount the coupons', taxes_amount each tax's exact sum
-- rounded once, and the sub-totals and total follow pricing.md's order.
CREATE FUNCTION billing.verify_invoice(invoice_id bigint) RETURNS jsonb
LANGUAGE plpgsql AS $$
#variable_conflict use_variable
DECLARE
    inv billing.invoices := billing._invoice(invoice_id);
    sub billing.subscriptions;
    cust billing.customers;
    billed_sub billing.subscriptions;
    w record;
    recomputed billing.usage_line[];
    in_advance bigint[];
    checked integer := 0;
    drifts jsonb := '[]';
    window_drifts jsonb;
    window_lines integer;
    fees numeric;
    progressive numeric;
    coupons numeric;
    taxes numeric;
    credits numeric;
    consistent boolean;
    report jsonb;
BEGIN
    PERFORM billing._require_status(inv, 'finalized', 'verify_invoice');
    SELECT * INTO sub FROM billing.subscriptions s WHERE s.customer_id = inv.customer_id AND s.id = inv.subscription_id;
    SELECT * INTO cust FROM billing.customers c WHERE c.id = inv.customer_id;
    FOR w IN
        SELECT DISTINCT fe.from_datetime, fe.to_datetime, ch.plan_version_id
        FROM billing.fees fe JOIN billing.charges ch ON ch.id = fe.charge_id
        -- A progressive-billing invoice bills part of a period's usage: its period's invoice
        -- is checked against the whole.
        WHERE fe.customer_id = inv.customer_id AND fe.invoice_id = inv.id AND fe.fee_type = 'charge' AND inv.invoice_type = 'subscription'
        ORDER BY 1, 3
    LOOP
        billed_sub := sub;
        billed_sub.plan_version_id := w.plan_version_id;
        -- Computed apart, not in the query below: on Citus that query runs on the customer's
        -- shard, where a function reading distributed tables cannot.
        -- (Charges paid in advance are billed at ingestion, on invoices of their own.)
        in_advance := ARRAY(SELECT c.id FROM billing.charges c WHERE c.plan_version_id = w.plan_version_id AND c.pay_in_advance);
        recomputed := ARRAY(SELECT u FROM billing._usage(billed_sub, cust, w.from_datetime, w.to_datetime, true) u
                            WHERE NOT u.charge_id = ANY (in_advance));
        WITH billed AS (
            SELECT fe.charge_id, fe.charge_filter_id AS filter_id, coalesce(fe.grouped_by, '{}'::jsonb) AS grouped_by,
                   sum(fe.units) AS units, sum(fe.events_count)::bigint AS events_count, sum(fe.precise_amount) AS amount
            FROM billing.fees fe
            JOIN billing.invoices bi ON bi.customer_id = fe.customer_id AND bi.id = fe.invoice_id AND bi.invoice_type = 'subscription'
            WHERE fe.customer_id = inv.customer_id AND fe.subscription_id = inv.subscription_id
              AND fe.fee_type IN ('charge', 'adjustment') AND fe.from_datetime = w.from_datetime
              AND fe.charge_id IN (SELECT r.charge_id FROM unnest(recomputed) r)
            GROUP BY 1, 2, 3
        )
        SELECT count(*), coalesce(jsonb_agg(jsonb_build_object(
                   'charge_id', r.charge_id, 'metric_code', r.billable_metric_code, 'filter', r.filter_values,
                   'group', nullif(r.grouped_by, '{}'::jsonb), 'from', w.from_datetime, 'to', w.to_datetime,
                   'billed_units', coalesce(b.units, 0), 'billed_events', coalesce(b.events_count, 0), 'billed_amount', coalesce(b.amount, 0),
                   'units', r.units, 'events', r.events_count, 'amount', r.amount,
                   'cause', CASE WHEN r.events_count > coalesce(b.events_count, 0) THEN 'events arrived after billing'
                                 ELSE 'the raw events differ from what was billed' END)
                   ORDER BY r.charge_id, r.filter_id NULLS FIRST, r.grouped_by::text COLLATE "C")
                   FILTER (WHERE r.amount <> coalesce(b.amount, 0) OR r.units <> coalesce(b.units, 0)
                                 OR r.events_count <> coalesce(b.events_count, 0)), '[]')
        INTO window_lines, window_drifts
        FROM unnest(recomputed) r
        LEFT JOIN billed b ON b.charge_id = r.charge_id AND b.filter_id IS NOT DISTINCT FROM r.filter_id AND b.grouped_by = r.grouped_by
        WHERE b.charge_id IS NOT NULL OR r.amount <> 0 OR r.events_count <> 0;
        checked := checked + window_lines;
        drifts := drifts || window_drifts;
    END LOOP;

    SELECT coalesce(sum(fe.amount), 0), coalesce(sum(fe.progressive_credit_amount), 0) INTO fees, progressive FROM billing.fees fe
    WHERE fe.customer_id = inv.customer_id AND fe.invoice_id = inv.id AND fe.invoiceable;
    SELECT coalesce(sum(ic.amount), 0) INTO coupons FROM billing.invoice_coupons ic
    WHERE ic.customer_id = inv.customer_id AND ic.invoice_id = inv.id;
    SELECT coalesce(sum(icn.amount), 0) INTO credits FROM billing.invoice_credit_notes icn
    WHERE icn.customer_id = inv.customer_id AND icn.invoice_id = inv.id;
    taxes := billing._invoice_taxes_amount(inv.customer_id, inv.id, inv.currency);
    consistent := inv.fees_amount = fees AND inv.progressive_billing_credit_amount = progressive AND inv.coupons_amount = coupons
        AND inv.taxes_amount = taxes AND inv.credit_notes_amount = credits
        AND inv.sub_total_excluding_taxes = inv.fees_amount - inv.progressive_billing_credit_amount - inv.coupons_amount
        AND inv.sub_total_including_taxes = inv.sub_total_excluding_taxes + inv.taxes_amount
        AND inv.prepaid_credit_amount = billing._prepaid_credits_paid(inv.customer_id, inv.id)
        AND inv.total_amount = inv.sub_total_including_taxes - inv.credit_notes_amount - inv.prepaid_credit_amount;
    report := jsonb_build_object(
        'invoice_id', inv.id, 'number', inv.number, 'verified_at', now(), 'lines_checked', checked,
        'drifting_lines', drifts, 'totals_consistent', consistent,
        'totals', jsonb_build_object('fees_amount', fees, 'progressive_billing_credit_amount', progressive, 'coupons_amount', coupons, 'taxes_amount', taxes,
                                     'credit_notes_amount', credits));
    INSERT INTO billing.invoice_verifications (customer_id, invoice_id, drifting_lines, totals_consistent, report)
    VALUES (inv.customer_id, inv.id, jsonb_array_length(drifts), consistent, report);
    RETURN report;
END $$;

REVOKE ALL ON FUNCTION billing.preview_invoice(text, timestamptz, text), billing.verify_invoice(bigint) FROM PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('billing.invoice_verifications', '');
SELECT pg_catalog.pg_extension_config_dump('billing.invoice_verifications_id_seq', '');
