-- Roles and the BI schema. Three group roles (NOLOGIN; grant them to login roles):
-- billing_admin runs the catalog and reads everything, billing_writer ingests and nothing
-- else, billing_reader sees the views of schema billing_bi and nothing else. Roles belong
-- to the cluster, not to a database: the first CREATE EXTENSION creates them, later ones
-- (in other databases) find them there.
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['billing_admin', 'billing_writer', 'billing_reader'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
        END IF;
    END LOOP;
END $$;
COMMENT ON ROLE billing_admin IS 'pg_billing: the catalog, usage and every table of schema billing (grant it to login roles).';
COMMENT ON ROLE billing_writer IS 'pg_billing: ingestion (single events, JSON batches, COPY into the intake, staged COPY), billing.authorize and billing.deduct_credits.';
COMMENT ON ROLE billing_reader IS 'pg_billing: the views of schema billing_bi, nothing else.';

-- Views for BI tools: plain typed columns (enum words as text, money as numeric), stable
-- names, one row per thing a report counts. They read the tables with their owner's rights,
-- so billing_reader needs nothing of schema billing.
CREATE SCHEMA billing_bi;

CREATE VIEW billing_bi.customers AS
SELECT c.external_id AS customer_external_id, c.name, c.email, c.currency, c.timezone,
       e.code AS billing_entity_code, c.created_at
FROM billing.customers c JOIN billing.billing_entities e ON e.id = c.billing_entity_id;

CREATE VIEW billing_bi.subscriptions AS
SELECT s.external_id AS subscription_external_id, c.external_id AS customer_external_id, p.code AS plan_code,
       v.version AS plan_version, v.interval::text AS billing_interval, v.amount AS plan_amount, v.currency,
       s.status::text AS status, s.billing_time::text AS billing_time, s.subscription_at, s.started_at, s.terminated_at
FROM billing.subscriptions s
JOIN billing.customers c ON c.id = s.customer_id
JOIN billing.plan_versions v ON v.id = s.plan_version_id
JOIN billing.plans p ON p.id = v.plan_id;

-- Usage per customer-local day, subscription and metric, from the day rollups (all
-- dimension sets and writer slots together).
CREATE VIEW billing_bi.usage_by_day AS
SELECT r.day, c.external_id AS customer_external_id, s.external_id AS subscription_external_id,
       m.code AS metric_code, m.aggregation::text AS aggregation,
       sum(r.events_count)::bigint AS events, sum(r.value_sum) AS value_sum, max(r.value_max) AS value_max
FROM billing.usage_rollups r
JOIN billing.subscriptions s ON s.customer_id = r.customer_id AND s.id = r.subscription_id
JOIN billing.customers c ON c.id = r.customer_id
JOIN billing.billable_metrics m ON m.id = r.billable_metric_id
GROUP BY r.day, c.external_id, s.external_id, m.code, m.aggregation;

-- What ingestion did with every event sent, per UTC day of ingestion: the events stored
-- (per metric) and the rejects (per metric code as sent, SQLSTATE and reason), so that
-- nothing sent goes uncounted. Duplicates of stored events are not stored again and are
-- not counted here.
CREATE VIEW billing_bi.ingestion_health AS
SELECT (e.ingested_at AT TIME ZONE 'UTC')::date AS day, m.code AS metric_code, 'accepted'::text AS outcome,
       NULL::text AS sqlstate, NULL::text AS reason, count(*)::bigint AS events
FROM billing.events e JOIN billing.billable_metrics m ON m.id = e.billable_metric_id
GROUP BY 1, 2
UNION ALL
SELECT (r.rejected_at AT TIME ZONE 'UTC')::date, r.code, 'rejected', r.sqlstate, r.reason, count(*)::bigint
FROM billing.rejected_events r
GROUP BY 1, 2, 4, 5;

-- Invoices as issued: every invoice (drafts, finalized and voided), with its totals.
CREATE VIEW billing_bi.invoices AS
SELECT i.id AS invoice_id, i.number, c.external_id AS customer_external_id, s.external_id AS subscription_external_id,
       p.code AS plan_code, i.invoice_type::text AS invoice_type, i.status::text AS status,
       i.payment_status::text AS payment_status, i.currency, i.issuing_date, i.due_date,
       i.charges_from, i.charges_to, i.fees_amount, i.coupons_amount, i.taxes_amount, i.credit_notes_amount,
       i.prepaid_credit_amount, i.total_amount, i.created_at, i.finalized_at, i.voided_at
FROM billing.invoices i
JOIN billing.customers c ON c.id = i.customer_id
LEFT JOIN billing.subscriptions s ON s.customer_id = i.customer_id AND s.id = i.subscription_id
LEFT JOIN billing.plan_versions v ON v.id = s.plan_version_id
LEFT JOIN billing.plans p ON p.id = v.plan_id;

-- The lines of every invoice: its invoiceable fees.
CREATE VIEW billing_bi.invoice_lines AS
SELECT f.invoice_id, i.number AS invoice_number, i.status::text AS invoice_status, c.external_id AS customer_external_id,
       f.fee_type::text AS fee_type, f.description, f.billable_metric_code AS metric_code, f.charge_model,
       f.filter_values, f.grouped_by, f.units, f.events_count, f.precise_unit_amount AS unit_amount, f.precise_amount,
       f.amount, i.currency, f.from_datetime, f.to_datetime
FROM billing.fees f
JOIN billing.invoices i ON i.customer_id = f.customer_id AND i.id = f.invoice_id
JOIN billing.customers c ON c.id = f.customer_id
WHERE f.invoiceable;

-- Revenue is what finalized invoices (not voided ones) bill, by the month of their issuing
-- date, per currency.
CREATE VIEW billing_bi.revenue_by_month AS
SELECT date_trunc('month', i.issuing_date)::date AS month, i.currency, count(*)::bigint AS invoices,
       sum(i.fees_amount) AS fees_amount, sum(i.taxes_amount) AS taxes_amount, sum(i.total_amount) AS total_amount
FROM billing.invoices i WHERE i.status = 'finalized'
GROUP BY 1, 2;

CREATE VIEW billing_bi.revenue_by_customer AS
SELECT date_trunc('month', i.issuing_date)::date AS month, c.external_id AS customer_external_id, i.currency,
       count(*)::bigint AS invoices, sum(i.fees_amount) AS fees_amount, sum(i.total_amount) AS total_amount
FROM billing.invoices i JOIN billing.customers c ON c.id = i.customer_id
WHERE i.status = 'finalized'
GROUP BY 1, 2, 3;

CREATE VIEW billing_bi.revenue_by_plan AS
SELECT date_trunc('month', i.issuing_date)::date AS month, p.code AS plan_code, i.currency,
       sum(f.amount) FILTER (WHERE f.fee_type = 'subscription') AS subscription_amount,
       sum(f.amount) FILTER (WHERE f.fee_type <> 'subscription') AS usage_amount, sum(f.amount) AS amount
FROM billing.fees f
JOIN billing.invoices i ON i.customer_id = f.customer_id AND i.id = f.invoice_id AND i.status = 'finalized'
JOIN billing.subscriptions s ON s.customer_id = f.customer_id AND s.id = f.subscription_id
JOIN billing.plan_versions v ON v.id = s.plan_version_id
JOIN billing.plans p ON p.id = v.plan_id
WHERE f.invoiceable
GROUP BY 1, 2, 3;

CREATE VIEW billing_bi.revenue_by_metric AS
SELECT date_trunc('month', i.issuing_date)::date AS month, f.billable_metric_code AS metric_code, i.currency,
       sum(f.units) AS units, sum(f.events_count)::bigint AS events, sum(f.amount) AS amount
FROM billing.fees f
JOIN billing.invoices i ON i.customer_id = f.customer_id AND i.id = f.invoice_id AND i.status = 'finalized'
WHERE f.invoiceable AND f.billable_metric_code IS NOT NULL
GROUP BY 1, 2, 3;

-- Monthly recurring revenue from the base fees of active subscriptions, the plan amount
-- brought to a month (weekly × 52 / 12, quarterly / 3, semiannual / 6, yearly / 12).
CREATE VIEW billing_bi.mrr AS
SELECT p.code AS plan_code, v.currency, count(*)::bigint AS active_subscriptions,
       sum(v.amount * CASE v.interval WHEN 'weekly' THEN 52 / 12.0 WHEN 'monthly' THEN 1 WHEN 'quarterly' THEN 1 / 3.0
                                      WHEN 'semiannual' THEN 1 / 6.0 ELSE 1 / 12.0 END) AS mrr
FROM billing.subscriptions s
JOIN billing.plan_versions v ON v.id = s.plan_version_id
JOIN billing.plans p ON p.id = v.plan_id
WHERE s.status = 'active'
GROUP BY 1, 2;

-- Drafts not yet finalized, with the day their grace period ends.
CREATE VIEW billing_bi.draft_invoices AS
SELECT i.id AS invoice_id, c.external_id AS customer_external_id, s.external_id AS subscription_external_id,
       i.currency, i.issuing_date, i.billing_at + e.grace_period_days * interval '1 day' AS finalizes_at,
       i.total_amount, i.refreshed_at
FROM billing.invoices i
JOIN billing.customers c ON c.id = i.customer_id
JOIN billing.billing_entities e ON e.id = i.billing_entity_id
LEFT JOIN billing.subscriptions s ON s.customer_id = i.customer_id AND s.id = i.subscription_id
WHERE i.status = 'draft';

-- The taxes finalized invoices collected, per month of issuing date, currency and tax (code,
-- name and rate as invoiced): each invoice's amount of a tax is its exact sum rounded once.
CREATE VIEW billing_bi.taxes_collected AS
SELECT date_trunc('month', i.issuing_date)::date AS month, i.currency, t.tax_code, t.tax_name, t.tax_rate,
       count(*)::bigint AS invoices, sum(t.base_amount) AS base_amount, sum(billing.round_money(t.amount, i.currency)) AS amount
FROM (SELECT ft.customer_id, ft.invoice_id, ft.tax_code, ft.tax_name, ft.tax_rate, sum(ft.base_amount) AS base_amount,
             sum(ft.precise_amount) AS amount
      FROM billing.fee_taxes ft GROUP BY 1, 2, 3, 4, 5) t
JOIN billing.invoices i ON i.customer_id = t.customer_id AND i.id = t.invoice_id
WHERE i.status = 'finalized'
GROUP BY 1, 2, 3, 4, 5;

-- What coupons took off finalized invoices, per month of issuing date, currency and coupon.
CREATE VIEW billing_bi.coupons_redeemed AS
SELECT date_trunc('month', i.issuing_date)::date AS month, i.currency, ic.coupon_code, ic.coupon_name,
       count(*)::bigint AS invoices, count(DISTINCT ic.customer_id)::bigint AS customers, sum(ic.amount) AS amount
FROM billing.invoice_coupons ic
JOIN billing.invoices i ON i.customer_id = ic.customer_id AND i.id = ic.invoice_id
WHERE i.status = 'finalized'
GROUP BY 1, 2, 3, 4;

-- Every credit note, with its invoice and customer: totals, refund, credit and what is left.
CREATE VIEW billing_bi.credit_notes AS
SELECT cn.id AS credit_note_id, cn.number, i.number AS invoice_number, c.external_id AS customer_external_id, cn.reason::text AS reason,
       cn.currency, cn.sub_total_excluding_taxes, cn.taxes_amount, cn.total_amount, cn.refund_amount, cn.credit_amount,
       cn.balance_amount, cn.credit_status::text AS credit_status, cn.created_at, cn.voided_at
FROM billing.credit_notes cn
JOIN billing.invoices i ON i.customer_id = cn.customer_id AND i.id = cn.invoice_id
JOIN billing.customers c ON c.id = cn.customer_id;

-- Finalized invoices never verified (billing.verify_invoice), or whose latest verification
-- found drifting lines or inconsistent totals.
CREATE VIEW billing_bi.invoices_to_verify AS
SELECT i.id AS invoice_id, i.number, c.external_id AS customer_external_id, i.currency, i.issuing_date, i.total_amount,
       CASE WHEN v.verified_at IS NULL THEN 'unverified' ELSE 'drift' END AS verification,
       v.verified_at, v.drifting_lines, v.totals_consistent
FROM billing.invoices i
JOIN billing.customers c ON c.id = i.customer_id
LEFT JOIN (SELECT DISTINCT ON (x.customer_id, x.invoice_id) x.customer_id, x.invoice_id, x.verified_at, x.drifting_lines,
                  x.totals_consistent
           FROM billing.invoice_verifications x
           ORDER BY x.customer_id, x.invoice_id, x.verified_at DESC, x.id DESC) v
       ON v.customer_id = i.customer_id AND v.invoice_id = i.id
WHERE i.status = 'finalized' AND (v.verified_at IS NULL OR v.drifting_lines > 0 OR NOT v.totals_consistent);

-- Every plan change, with the plans on both sides: pending until its instant has come.
CREATE VIEW billing_bi.plan_changes AS
SELECT s.external_id AS subscription_external_id, c.external_id AS customer_external_id, pc.kind::text AS kind,
       fp.code AS from_plan_code, fv.version AS from_plan_version, tp.code AS to_plan_code, tv.version AS to_plan_version,
       pc.effective_at, CASE WHEN pc.effective_at > now() THEN 'pending' ELSE 'effective' END AS status, pc.requested_at
FROM billing.plan_changes pc
JOIN billing.subscriptions s ON s.customer_id = pc.customer_id AND s.id = pc.subscription_id
JOIN billing.customers c ON c.id = pc.customer_id
JOIN billing.plan_versions fv ON fv.id = pc.from_plan_version_id
JOIN billing.plans fp ON fp.id = fv.plan_id
JOIN billing.plan_versions tv ON tv.id = pc.to_plan_version_id
JOIN billing.plans tp ON tp.id = tv.plan_id;

-- Wallets with their balances now (the ongoing balance, which prices current usage, is
-- billing.wallet_balance's).
CREATE VIEW billing_bi.wallets AS
SELECT w.external_id AS wallet_external_id, c.external_id AS customer_external_id, w.code, w.name, w.status::text AS status,
       w.currency, w.rate_amount, w.priority, w.credits_balance, billing._credits_worth(w.credits_balance, w.rate_amount, w.currency) AS balance_amount,
       w.expiration_at, w.created_at, w.terminated_at
FROM billing.wallets w JOIN billing.customers c ON c.id = w.customer_id;

-- The wallets' ledger: every credit in and out, signed (in positive, out negative).
CREATE VIEW billing_bi.wallet_transactions AS
SELECT t.id AS transaction_id, w.external_id AS wallet_external_id, c.external_id AS customer_external_id,
       t.transaction_type::text AS transaction_type, t.transaction_status::text AS transaction_status, t.status::text AS status,
       t.source::text AS source, CASE t.transaction_type WHEN 'inbound' THEN t.credits ELSE -t.credits END AS credits,
       CASE t.transaction_type WHEN 'inbound' THEN t.amount ELSE -t.amount END AS amount, w.currency, t.invoice_id, i.number AS invoice_number,
       t.reason, t.created_at, t.settled_at
FROM billing.wallet_transactions t
JOIN billing.wallets w ON w.customer_id = t.customer_id AND w.id = t.wallet_id
JOIN billing.customers c ON c.id = t.customer_id
LEFT JOIN billing.invoices i ON i.customer_id = t.customer_id AND i.id = t.invoice_id;

GRANT USAGE ON SCHEMA billing_bi TO billing_reader, billing_admin;
GRANT SELECT ON ALL TABLES IN SCHEMA billing_bi TO billing_reader, billing_admin;

-- The writer: exactly what ingestion needs (docs/ingestion.md, Privileges), through every
-- path: single events, JSON batches, COPY into the intake, staged COPY.
GRANT USAGE ON SCHEMA billing TO billing_writer;
GRANT SELECT ON billing.subscription_directory, billing.billable_metrics, billing.charges, billing.charge_filters TO billing_writer;
GRANT SELECT, INSERT ON billing.events TO billing_writer;
GRANT USAGE ON SEQUENCE billing.events_id_seq TO billing_writer;
GRANT SELECT, INSERT, UPDATE ON billing.usage_rollups TO billing_writer;
GRANT INSERT ON billing.rejected_events, billing.event_intake TO billing_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON billing.event_staging TO billing_writer;
GRANT EXECUTE ON FUNCTION billing.ingest_event(text, text, text, timestamptz, jsonb, numeric), billing.ingest_events(jsonb),
    billing.ingest_staged(integer), billing.last_intake(), billing.direct_write_status() TO billing_writer;
-- Applications that sell by the request check and pay as they go (both security definer).
GRANT EXECUTE ON FUNCTION billing.deduct_credits(text, numeric, text, text), billing.authorize(text, text, numeric) TO billing_writer;

-- The admin: the catalog, usage, invoicing and every table of schema billing (not billing.distribute(),
-- which stays with superusers).
GRANT USAGE ON SCHEMA billing TO billing_admin;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES ON ALL TABLES IN SCHEMA billing TO billing_admin;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA billing TO billing_admin;
GRANT EXECUTE ON ALL ROUTINES IN SCHEMA billing TO billing_admin;
REVOKE EXECUTE ON FUNCTION billing.distribute(integer) FROM billing_admin;
