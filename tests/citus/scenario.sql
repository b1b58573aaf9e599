-- The Citus tier's scenario, run on one server and on a distributed Citus cluster: every
-- line it prints must be the same on both. Three customers in three time zones (so in
-- different shards), events through every ingestion path with accepted, duplicate,
-- conflicting and rejected ones, a rolled-back caller, and usage priced from the rollups
-- and from raw events, checked against a recomputation from the stored events.
\set VERBOSITY terse
SET client_min_messages = warning;
SET TimeZone = 'UTC';

SELECT external_id, currency, timezone FROM billing.create_customer('acme', 'Acme', 'EUR', 'Europe/Paris');
SELECT external_id FROM billing.create_customer('tokyo-ai', 'Tokyo AI', 'EUR', 'Asia/Tokyo');
SELECT external_id FROM billing.create_customer('nyc-labs', 'NYC Labs', 'EUR', 'America/New_York');
SELECT code FROM billing.create_billable_metric('tokens', 'Tokens', 'sum', 'tokens', filters => '{"model": ["small", "large"]}');
SELECT code FROM billing.create_billable_metric('calls', 'Calls', 'count');
SELECT code FROM billing.create_billable_metric('users', 'Users', 'unique_count', 'user');
SELECT code FROM billing.create_billable_metric('payments', 'Payments', 'sum', 'amount');
SELECT version FROM billing.create_plan('api', 'API', 'monthly', 49, 'EUR', '[
  {"billable_metric_code": "tokens", "charge_model": "graduated", "pricing_group_keys": ["project"],
   "properties": {"graduated_ranges": [{"from_value": 0, "to_value": 100, "per_unit_amount": "0.02", "flat_amount": "1"},
                                       {"from_value": 101, "to_value": null, "per_unit_amount": "0.01", "flat_amount": "0"}]},
   "filters": [{"values": {"model": ["large"]}, "properties": {"graduated_ranges": [
                 {"from_value": 0, "to_value": null, "per_unit_amount": "0.05", "flat_amount": "0"}]}}]},
  {"billable_metric_code": "calls", "charge_model": "package", "properties": {"amount": "3", "package_size": 10, "free_units": 5}},
  {"billable_metric_code": "users", "charge_model": "standard", "properties": {"amount": "4"}},
  {"billable_metric_code": "payments", "charge_model": "percentage", "properties": {"rate": "2.5", "fixed_amount": "0.3"}}]');
SELECT external_id, status FROM billing.create_subscription('sub-acme', 'acme', 'api', '2026-01-01 00:00+01');
SELECT external_id, status FROM billing.create_subscription('sub-tokyo', 'tokyo-ai', 'api', '2026-02-15 00:00+09', 'anniversary');
SELECT external_id, status FROM billing.create_subscription('sub-nyc', 'nyc-labs', 'api', '2026-03-10 12:00-05');
-- (An external id is unique across customers; Citus names the shard's index: SQLSTATE only.)
\set VERBOSITY sqlstate
SELECT billing.create_subscription('sub-acme', 'tokyo-ai', 'api');
\set VERBOSITY terse

-- Single events: accepted, the exact replay a duplicate, a changed payload a conflict, an
-- unknown subscription an error; one in a rolled-back transaction leaves nothing.
SELECT billing.ingest_event('sub-acme', 'tokens', 's-1', '2026-03-02 10:00+00', '{"tokens": 70, "model": "small", "project": "chat"}');
SELECT billing.ingest_event('sub-acme', 'tokens', 's-1', '2026-03-02 10:00+00', '{"tokens": 70, "model": "small", "project": "chat"}');
SELECT billing.ingest_event('sub-acme', 'tokens', 's-1', '2026-03-02 10:00+00', '{"tokens": 71, "model": "small", "project": "chat"}');
SELECT billing.ingest_event('sub-nope', 'tokens', 's-2', '2026-03-02 10:00+00', '{"tokens": 1}');
BEGIN;
SELECT billing.ingest_event('sub-tokyo', 'tokens', 'rolled-back', '2026-03-02 10:00+00', '{"tokens": 1000, "model": "small", "project": "chat"}');
ROLLBACK;
SELECT billing.ingest_event('sub-tokyo', 'calls', 's-3', '2026-02-28 23:30:00+00');
SELECT billing.ingest_event('sub-nyc', 'payments', 's-4', '2026-03-10 17:00+00', '{"amount": "120.50"}');

-- A batch over the three customers: new events, replays, a conflict, rejects.
SELECT index, transaction_id, status, reason FROM billing.ingest_events((
  SELECT jsonb_agg(e ORDER BY n) FROM (
    SELECT n, jsonb_build_object(
             'external_subscription_id', (ARRAY['sub-acme', 'sub-tokyo', 'sub-nyc'])[n % 3 + 1],
             'code', (ARRAY['tokens', 'calls', 'users', 'payments'])[n % 4 + 1],
             'transaction_id', 'b-' || n,
             'timestamp', '2026-03-' || lpad((10 + n % 19)::text, 2, '0') || 'T' || lpad((n % 24)::text, 2, '0') || ':15:00Z',
             'properties', jsonb_build_object('tokens', n * 7 % 50, 'model', CASE WHEN n % 5 = 0 THEN 'large' ELSE 'small' END,
                                              'project', 'p' || n % 2, 'user', 'u' || n % 6, 'amount', (n * 13 % 200) || '.25')) AS e
    FROM generate_series(1, 60) n
    UNION ALL SELECT 61, '{"external_subscription_id": "sub-acme", "code": "tokens", "transaction_id": "s-1", "timestamp": "2026-03-02T10:00:00Z", "properties": {"tokens": 70, "model": "small", "project": "chat"}}'
    UNION ALL SELECT 62, '{"external_subscription_id": "sub-acme", "code": "tokens", "transaction_id": "s-1", "timestamp": "2026-03-02T10:00:00Z", "properties": {"tokens": 9, "model": "small", "project": "chat"}}'
    UNION ALL SELECT 63, '{"external_subscription_id": "sub-gone", "code": "tokens", "transaction_id": "r-1"}'
    UNION ALL SELECT 64, '{"external_subscription_id": "sub-nyc", "code": "tokens", "transaction_id": "r-2", "properties": {"tokens": "many"}}'
  ) s))
WHERE status <> 'accepted' OR index % 10 = 0 ORDER BY index;
-- The same batch again: every event a duplicate now, bar the conflict and the rejects.
SELECT status, count(*) FROM billing.ingest_events((
  SELECT jsonb_agg(jsonb_build_object(
             'external_subscription_id', (ARRAY['sub-acme', 'sub-tokyo', 'sub-nyc'])[n % 3 + 1],
             'code', (ARRAY['tokens', 'calls', 'users', 'payments'])[n % 4 + 1],
             'transaction_id', 'b-' || n,
             'timestamp', '2026-03-' || lpad((10 + n % 19)::text, 2, '0') || 'T' || lpad((n % 24)::text, 2, '0') || ':15:00Z',
             'properties', jsonb_build_object('tokens', CASE WHEN n = 7 THEN 1 ELSE n * 7 % 50 END,
                                              'model', CASE WHEN n % 5 = 0 THEN 'large' ELSE 'small' END,
                                              'project', 'p' || n % 2, 'user', 'u' || n % 6, 'amount', (n * 13 % 200) || '.25')) ORDER BY n)
  FROM generate_series(1, 60) n)) GROUP BY status ORDER BY status;

-- COPY through the intake, and a staged load.
COPY billing.event_intake (external_subscription_id, code, transaction_id, "timestamp", properties) FROM stdin;
sub-acme	tokens	c-1	2026-03-20T08:00:00Z	{"tokens": 40, "model": "large", "project": "p0"}
sub-tokyo	users	c-2	2026-03-20T08:00:00Z	{"user": "u-new"}
sub-nyc	users	c-3	2026-03-20T08:00:00Z	{"user": "u1", "operation_type": "remove"}
sub-acme	tokens	b-3	2026-03-13T03:15:00Z	{"tokens": 21, "model": "small", "project": "p1"}
sub-gone	tokens	c-4	2026-03-20T08:00:00Z	{"tokens": 6}
\.
SELECT * FROM billing.last_intake();
INSERT INTO billing.event_staging (external_subscription_id, code, transaction_id, "timestamp", properties)
VALUES ('sub-tokyo', 'calls', 'st-1', '2026-03-21T00:00:00Z', '{}'),
       ('sub-acme', 'tokens', 'c-1', '2026-03-20T08:00:00Z', '{"tokens": 40, "model": "large", "project": "p0"}'),
       ('sub-nyc', 'payments', 'st-2', '2026-03-21T00:00:00Z', '{"amount": "not money"}');
SELECT * FROM billing.ingest_staged();

-- A termination: events after it are rejected.
SELECT external_id, status, terminated_at FROM billing.terminate_subscription('sub-nyc', '2026-03-25 00:00+00');
SELECT status FROM billing.ingest_events('[{"external_subscription_id": "sub-nyc", "code": "calls", "transaction_id": "late", "timestamp": "2026-03-26T00:00:00Z"}]');

-- What was stored, and the usage: each subscription's March, from the rollups (day-aligned
-- windows) and from raw events (a window that is not), with amounts rounded to cents.
SELECT count(*) AS events, sum(value) AS value_sum, count(DISTINCT (customer_id, transaction_id)) AS keys FROM billing.events;
SELECT sum(events_count) AS rollup_events, sum(value_sum) AS rollup_sum FROM billing.usage_rollups;
SELECT external_subscription_id, transaction_id, sqlstate, reason FROM billing.rejected_events ORDER BY transaction_id, reason;
SELECT s.external_id, u.billable_metric_code, u.filter_values, u.grouped_by, u.units, u.events_count,
       billing.round_money(u.amount, u.currency) AS amount
FROM (VALUES ('sub-acme', 'Europe/Paris'), ('sub-tokyo', 'Asia/Tokyo'), ('sub-nyc', 'America/New_York')) s(external_id, tz),
     billing.usage(s.external_id, ('2026-03-01'::timestamp AT TIME ZONE s.tz), ('2026-04-01'::timestamp AT TIME ZONE s.tz) - interval '1 microsecond') u
WHERE u.events_count > 0
ORDER BY 1, 2, 3::text NULLS FIRST, 4::text;
SELECT u.billable_metric_code, u.grouped_by, u.units, u.events_count, billing.round_money(u.amount, u.currency) AS amount
FROM billing.usage('sub-acme', '2026-03-10 12:00+00', '2026-03-20 12:00+00') u
WHERE u.events_count > 0 ORDER BY 1, 2::text, 3;

-- The units of the sum and count metrics, recomputed from the stored events, equal usage's.
WITH stored AS (
    SELECT d.external_id, m.code, sum(CASE WHEN m.aggregation = 'count' THEN 1 ELSE e.value END) AS units
    FROM billing.events e
    JOIN billing.subscription_directory d ON d.customer_id = e.customer_id AND d.subscription_id = e.subscription_id
    JOIN billing.billable_metrics m ON m.id = e.billable_metric_id
    WHERE m.code IN ('tokens', 'calls', 'payments')
    GROUP BY 1, 2
), reported AS (
    SELECT s.external_id, u.billable_metric_code AS code, sum(u.units) AS units
    FROM (VALUES ('sub-acme'), ('sub-tokyo'), ('sub-nyc')) s(external_id), billing.usage(s.external_id, '2026-01-01', '2026-12-31') u
    WHERE u.billable_metric_code IN ('tokens', 'calls', 'payments')
    GROUP BY 1, 2
)
SELECT r.external_id, r.code, r.units = coalesce(st.units, 0) AS usage_equals_events
FROM reported r LEFT JOIN stored st USING (external_id, code)
ORDER BY 1, 2;

-- The BI views read the same on both.
SELECT day, customer_external_id, subscription_external_id, metric_code, aggregation, events, value_sum, value_max
FROM billing_bi.usage_by_day ORDER BY 1, 2, 3, 4;
SELECT metric_code, outcome, sqlstate, reason, events FROM billing_bi.ingestion_health ORDER BY 1, 2, 3, 4;
SELECT subscription_external_id, customer_external_id, plan_code, billing_interval, status, billing_time
FROM billing_bi.subscriptions ORDER BY 1;

-- The billing run gives the same invoices, fees, taxes and outbox events on both, and a
-- draft's lifecycle (refresh, finalize, payment status, void) works by invoice id. Taxes:
-- the entity's default for two customers, acme's own, and the calls charge's.
SELECT code FROM billing.create_tax('vat', 'VAT', 20);
SELECT code FROM billing.create_tax('reduced', 'Reduced VAT', 5.5);
SELECT code FROM billing.create_tax('levy', 'Levy', 1.25);
SELECT billing.set_taxes('billing_entity', 'default', '{vat}');
SELECT billing.set_taxes('customer', 'acme', '{reduced}');
SELECT billing.set_taxes('charge', c.id::text, '{levy,vat}')
FROM billing.charges c JOIN billing.billable_metrics m ON m.id = c.billable_metric_id WHERE m.code = 'calls';
-- Coupons: 10% on two invoices for acme; 30.00 once for tokyo-ai, limited to tokens (its
-- remainder carried on).
SELECT code FROM billing.create_coupon('ten', '10% off', 'percentage', percentage_rate => 10, frequency => 'recurring', frequency_duration => 2);
SELECT code FROM billing.create_coupon('tokens30', '30 off tokens', 'fixed_amount', amount => 30, currency => 'EUR', billable_metrics => '{tokens}');
SELECT status FROM billing.apply_coupon('acme', 'ten');
SELECT status FROM billing.apply_coupon('tokyo-ai', 'tokens30');
CALL billing.run_billing('2026-04-01 12:00+00');
SELECT s.external_id, i.billing_at, i.status, i.number, i.fees_amount, i.coupons_amount, i.taxes_amount, i.total_amount
FROM billing.invoices i JOIN billing.subscriptions s ON s.customer_id = i.customer_id AND s.id = i.subscription_id
ORDER BY 1, 2;
SELECT c.external_id, co.code, a.status, a.amount_remaining, a.frequency_duration_remaining
FROM billing.applied_coupons a JOIN billing.customers c ON c.id = a.customer_id JOIN billing.coupons co ON co.id = a.coupon_id
ORDER BY 1, 2;
SELECT s.external_id, f.fee_key, f.precise_coupons_amount, ft.tax_code, ft.tax_rate, ft.base_amount, ft.precise_amount
FROM billing.fee_taxes ft
JOIN billing.fees f ON f.customer_id = ft.customer_id AND f.id = ft.fee_id
JOIN billing.subscriptions s ON s.customer_id = f.customer_id AND s.id = f.subscription_id
ORDER BY 1, 2, 4;
-- (invoice_document reads distributed tables: it is called from a query over a local
-- table of invoice ids, not from a query over a distributed table.)
CREATE TEMP TABLE invoice_ids AS
SELECT i.id, row_number() OVER (ORDER BY s.external_id, i.billing_at) AS n
FROM billing.invoices i JOIN billing.subscriptions s ON s.customer_id = i.customer_id AND s.id = i.subscription_id;
SELECT billing.invoice_document(x.id) #>> '{subscription,external_id}' AS subscription, billing.invoice_document(x.id) -> 'coupons' AS coupons,
       billing.invoice_document(x.id) -> 'taxes' AS taxes
FROM invoice_ids x ORDER BY x.n;
SELECT s.external_id, f.fee_type, f.fee_key, f.units, f.precise_amount, f.amount
FROM billing.fees f JOIN billing.subscriptions s ON s.customer_id = f.customer_id AND s.id = f.subscription_id
ORDER BY 1, 3;
SELECT count(*) AS failures FROM billing.billing_failures;
UPDATE billing.billing_entities SET grace_period_days = 5 WHERE code = 'default';
SELECT billing_at, status, fees_amount FROM billing.bill_subscription('sub-acme', '2026-05-01 12:00+00');
SELECT invoice_id AS draft FROM billing_bi.draft_invoices WHERE subscription_external_id = 'sub-acme' \gset
SELECT status, fees_amount FROM billing.refresh_invoice(:draft);
SELECT status, number FROM billing.finalize_invoice(:draft);
SELECT status, payment_status FROM billing.set_payment_status(:draft, 'failed');
SELECT status FROM billing.void_invoice(:draft);
UPDATE billing.invoices SET total_amount = 0 WHERE id = :draft;
SELECT type, count(*) FROM billing.outbox GROUP BY 1 ORDER BY 1;
SELECT month, currency, invoices, total_amount FROM billing_bi.revenue_by_month ORDER BY 1, 2;
SELECT month, currency, tax_code, tax_rate, invoices, base_amount, amount FROM billing_bi.taxes_collected ORDER BY 1, 2, 3;
SELECT month, currency, coupon_code, invoices, customers, amount FROM billing_bi.coupons_redeemed ORDER BY 1, 2, 3;
-- A preview writes nothing and equals on both: sub-tokyo's next anniversary invoice.
SELECT billing.preview_invoice('sub-tokyo', '2026-04-01 12:00+00') -> 'totals' AS preview_totals;
SELECT count(*) AS invoices FROM billing.invoices;
-- Every finalized invoice, recomputed from the raw events on the distributed tables, is as billed.
SELECT x.n, v.report ->> 'totals_consistent' AS totals_consistent, jsonb_array_length(v.report -> 'drifting_lines') AS drifting_lines,
       v.report -> 'lines_checked' AS lines_checked
FROM invoice_ids x, LATERAL (SELECT billing.verify_invoice(x.id) AS report) v ORDER BY x.n;
SELECT count(*) AS to_verify FROM billing_bi.invoices_to_verify;
-- A credit note on the distributed tables, consumed by the next invoice of its customer.
SELECT number, taxes_amount, total_amount, credit_amount FROM billing.create_credit_note(
  (SELECT i.id FROM billing.invoices i JOIN billing.subscriptions s ON s.customer_id = i.customer_id AND s.id = i.subscription_id
   WHERE s.external_id = 'sub-tokyo' ORDER BY i.billing_at LIMIT 1),
  (SELECT jsonb_agg(jsonb_build_object('fee_id', f.id, 'amount', f.amount)) FROM billing.fees f
   JOIN billing.subscriptions s ON s.customer_id = f.customer_id AND s.id = f.subscription_id
   WHERE s.external_id = 'sub-tokyo' AND f.fee_type = 'subscription'), 'order_change');
SELECT number, sub_total_including_taxes, credit_notes_amount, total_amount FROM billing.bill_subscription('sub-tokyo', '2026-04-20 00:00+00');
SELECT number, balance_amount, credit_status FROM billing_bi.credit_notes ORDER BY 1;
-- Progressive billing on the distributed tables: a threshold crossed in sub-tokyo's open
-- period (April 15 to May 14), then that period's invoice deducting what it billed.
SELECT billing.set_usage_thresholds('api', '[{"amount": "1"}]');
SELECT billing.ingest_event('sub-tokyo', 'calls', 'april-1', '2026-04-20 10:00+00');
SELECT invoice_type, fees_amount, total_amount FROM billing.bill_subscription('sub-tokyo', '2026-04-25 00:00+00');
SELECT invoice_type, fees_amount, progressive_billing_credit_amount, total_amount
FROM billing.bill_subscription('sub-tokyo', '2026-05-20 00:00+00') ORDER BY billing_at;
-- Fixed charges on the distributed tables: 4 seats at 5.00, 6 from March 16 (prorated):
-- (4 × 15 + 6 × 16) / 31 = 5.03226 seats → 25.16.
SELECT code FROM billing.create_add_on('seat', 'Seats', 5, 'EUR');
SELECT version FROM billing.create_plan('seats', 'Seats', 'monthly', 0, 'EUR');
SELECT units FROM billing.add_fixed_charge('seats', 'seat', 'standard', '{"amount": "5"}', 4, prorated => true);
SELECT external_id FROM billing.create_customer('seat-co', 'Seat Co', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('sub-seats', 'seat-co', 'seats', '2026-03-01 00:00+00');
SELECT billing.set_fixed_charge_units('sub-seats', 'seat', 6, '2026-03-16 00:00+00');
SELECT fees_amount FROM billing.bill_subscription('sub-seats', '2026-04-01 00:05+00');
-- Plan changes on the distributed tables: seat-co upgrades from seats (0.00) to seats-plus
-- (31.00 a month, in advance) on April 11: its fee for April 11-30, 20 days of 30 = 20.67,
-- with the seats' April 1-10 (6 seats x 10 / 30 = 2 x 5.00 = 10.00); then a downgrade back,
-- pending until June 1, which billing.activate_subscriptions applies once it has come.
SELECT version FROM billing.create_plan('seats-plus', 'Seats plus', 'monthly', 31, 'EUR', pay_in_advance => true);
SELECT kind, effective_at FROM billing.change_plan('sub-seats', 'seats-plus', '2026-04-11 00:00+00');
SELECT i.billing_at, i.fees_amount, i.total_amount FROM billing.invoices i JOIN billing.subscriptions s ON s.customer_id = i.customer_id
AND s.id = i.subscription_id WHERE s.external_id = 'sub-seats' ORDER BY i.billing_at;
SELECT kind, effective_at FROM billing.change_plan('sub-seats', 'seats', '2026-05-05 00:00+00');
SELECT subscription_external_id, kind, from_plan_code, to_plan_code, effective_at FROM billing_bi.plan_changes ORDER BY effective_at;
SELECT billing.activate_subscriptions('2026-06-01 00:00+00') >= 0 AS activated;
SELECT billing_at, fees_amount FROM billing.bill_subscription('sub-seats', '2026-06-01 00:05+00') ORDER BY billing_at;
SELECT p.code FROM billing.subscriptions s JOIN billing.plan_versions v ON v.id = s.plan_version_id JOIN billing.plans p ON p.id = v.plan_id
WHERE s.external_id = 'sub-seats';
-- Charges paid in advance on the distributed tables: graduated requests (0-10 at 1.00 with a
-- 5.00 flat fee, then 0.50), billed as ingested: 1 request 6.00, then 11 more 10.00; the
-- day's pay_in_advance invoice 16.00 (with the entity's 20 % tax 19.20), finalized by the run
-- once the day and the 5-day grace period have passed.
SELECT code FROM billing.create_billable_metric('requests', 'Requests', 'count');
SELECT version FROM billing.create_plan('metered', 'Metered', 'monthly', 0, 'EUR', '[{"billable_metric_code": "requests",
  "charge_model": "graduated", "pay_in_advance": true, "properties": {"graduated_ranges": [
  {"from_value": 0, "to_value": 10, "per_unit_amount": "1", "flat_amount": "5"},
  {"from_value": 11, "to_value": null, "per_unit_amount": "0.5", "flat_amount": "0"}]}}]');
SELECT external_id FROM billing.create_customer('metered-co', 'Metered Co', 'EUR', 'Asia/Tokyo');
SELECT status FROM billing.create_subscription('sub-metered', 'metered-co', 'metered', '2026-03-01 00:00+09');
SELECT billing.ingest_event('sub-metered', 'requests', 'r-1', '2026-03-05 10:00+09');
SELECT count(*) FROM billing.ingest_events((SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 'sub-metered', 'code', 'requests',
  'transaction_id', 'r-' || n, 'timestamp', '2026-03-06T10:00:00+09:00')) FROM generate_series(2, 12) n));
SELECT units, billed_units, events_count, billed_amount FROM billing.in_advance_usage;
SELECT i.invoice_type, i.status, i.fees_amount FROM billing.invoices i JOIN billing.customers c ON c.id = i.customer_id
WHERE c.external_id = 'metered-co';
CALL billing.finalize_drafts(now() + interval '7 days');
SELECT i.invoice_type, i.status, i.fees_amount, i.total_amount FROM billing.invoices i JOIN billing.customers c ON c.id = i.customer_id
WHERE c.external_id = 'metered-co';
-- A recurring charge paid in advance on the distributed tables: storage at 1.00 a GB and
-- month, prorated: +10 GB on March 1 bills 10.00, +5 on the 22nd 1.61; April starts from the
-- 15 GB carried in (15.00 on the invoice of April 1), +1 on the 10th bills 0.70.
SELECT code FROM billing.create_billable_metric('storage', 'Storage', 'sum', 'gb', recurring => true);
SELECT version FROM billing.create_plan('vault', 'Vault', 'monthly', 0, 'EUR', '[{"billable_metric_code": "storage",
  "charge_model": "standard", "pay_in_advance": true, "prorated": true, "properties": {"amount": "1"}}]');
SELECT external_id FROM billing.create_customer('vault-co', 'Vault Co', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('sub-vault', 'vault-co', 'vault', '2026-03-01 00:00+00');
SELECT billing.ingest_event('sub-vault', 'storage', 'v-1', '2026-03-01 10:00+00', '{"gb": 10}'),
       billing.ingest_event('sub-vault', 'storage', 'v-2', '2026-03-22 10:00+00', '{"gb": 5}');
SELECT invoice_type, fees_amount FROM billing.bill_subscription('sub-vault', '2026-04-01 00:05+00') ORDER BY billing_at;
SELECT billing.ingest_event('sub-vault', 'storage', 'v-3', '2026-04-10 10:00+00', '{"gb": 1}');
SELECT i.invoice_type, f.units, f.amount FROM billing.fees f JOIN billing.invoices i ON i.customer_id = f.customer_id AND i.id = f.invoice_id
JOIN billing.customers c ON c.id = f.customer_id WHERE c.external_id = 'vault-co' ORDER BY i.invoice_type, f.from_datetime;
-- Members paid in advance on the distributed tables: 10.00 a user; u1, u2, u1 again, u2
-- removed and back, u3: 30.00.
SELECT code FROM billing.create_billable_metric('members', 'Members', 'unique_count', 'user_id');
SELECT version FROM billing.create_plan('crew', 'Crew', 'monthly', 0, 'EUR', '[{"billable_metric_code": "members",
  "charge_model": "standard", "pay_in_advance": true, "properties": {"amount": "10"}}]');
SELECT status FROM billing.create_subscription('sub-crew', 'vault-co', 'crew', '2026-03-01 00:00+00');
SELECT billing.ingest_event('sub-crew', 'members', 'm-1', '2026-03-02 10:00+00', '{"user_id": "u1"}'),
       billing.ingest_event('sub-crew', 'members', 'm-2', '2026-03-03 10:00+00', '{"user_id": "u2"}'),
       billing.ingest_event('sub-crew', 'members', 'm-3', '2026-03-04 10:00+00', '{"user_id": "u1"}'),
       billing.ingest_event('sub-crew', 'members', 'm-4', '2026-03-05 10:00+00', '{"user_id": "u2", "operation_type": "remove"}'),
       billing.ingest_event('sub-crew', 'members', 'm-5', '2026-03-06 10:00+00', '{"user_id": "u2"}'),
       billing.ingest_event('sub-crew', 'members', 'm-6', '2026-03-07 10:00+00', '{"user_id": "u3"}');
SELECT u.units, u.billed_units, u.events_count, u.billed_amount FROM billing.in_advance_usage u
JOIN billing.subscriptions s ON s.customer_id = u.customer_id AND s.id = u.subscription_id WHERE s.external_id = 'sub-crew';
-- Prepaid credits on the distributed tables: a bundle limited to calls (rate 0.01, priority
-- 1: 2,000 credits bought on a credit-purchase invoice of 20.00) and a general wallet (rate
-- 1, 5 granted) for wallet-co, whose March invoice (10.00 base + 30 calls at 0.10 = 13.00,
-- with the entity's 20 % tax 15.60) the bundle pays the calls with their tax, 3.60 (360
-- credits), of, and the general wallet 5.00: 7.00 due.
SELECT version FROM billing.create_plan('walleted', 'Walleted', 'monthly', 10, 'EUR', '[{"billable_metric_code": "calls",
  "charge_model": "standard", "properties": {"amount": "0.10"}}]');
SELECT external_id FROM billing.create_customer('wallet-co', 'Wallet Co', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('sub-wallet', 'wallet-co', 'walleted', '2026-03-01 00:00+00');
SELECT external_id, credits_balance FROM billing.create_wallet('wallet-co', 'bundle', 0.01, priority => 1,
  applies_to => '{"billable_metric_codes": ["calls"]}', paid_credits => 2000);
SELECT external_id, credits_balance FROM billing.create_wallet('wallet-co', 'main', granted_credits => 5);
SELECT count(*) FROM billing.ingest_events((SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 'sub-wallet', 'code', 'calls',
  'transaction_id', 'w-' || n, 'timestamp', '2026-03-10T10:00:00Z')) FROM generate_series(1, 30) n));
SELECT invoice_type, status, fees_amount, prepaid_credit_amount, total_amount
FROM billing.bill_subscription('sub-wallet', '2026-04-01 00:05+00') ORDER BY billing_at;
CALL billing.finalize_drafts('2026-04-07 00:00+00');
SELECT i.invoice_type, i.status, i.fees_amount, i.prepaid_credit_amount, i.total_amount FROM billing.invoices i
JOIN billing.customers c ON c.id = i.customer_id WHERE c.external_id = 'wallet-co' ORDER BY i.id;
-- Deductions: one, its replay, a conflicting replay, an overdraw, one rolled back.
SELECT credits, amount FROM billing.deduct_credits('wallet-co/bundle', 150, 'req-1', 'chat');
SELECT credits, amount FROM billing.deduct_credits('wallet-co/bundle', 150, 'req-1', 'chat');
SELECT credits FROM billing.deduct_credits('wallet-co/bundle', 151, 'req-1');
SELECT credits FROM billing.deduct_credits('wallet-co/bundle', 5000, 'req-2');
BEGIN;
SELECT credits FROM billing.deduct_credits('wallet-co/bundle', 10, 'req-3');
ROLLBACK;
SELECT credits_balance, balance_amount, ongoing_usage_amount FROM billing.wallet_balance('wallet-co/bundle');
-- A threshold rule (at 1,000 credits or less, buy 1,000) fired by a deduction (1,490 ->
-- 990); an interval rule fired by the run; a voided invoice gives its credits back; a
-- wallet expires.
SELECT trigger, armed FROM billing.add_top_up_rule('wallet-co/bundle', 'threshold', paid_credits => 1000, threshold_credits => 1000);
SELECT credits FROM billing.deduct_credits('wallet-co/bundle', 500, 'req-4');
SELECT trigger FROM billing.add_top_up_rule('wallet-co/main', 'interval', granted_credits => 3, "interval" => 'monthly',
                                            started_at => '2026-01-15 00:00+00');
SELECT expired, interval_top_ups, threshold_top_ups FROM billing.run_wallets('2026-03-20 00:00+00');
SELECT i.id AS wallet_invoice FROM billing.invoices i JOIN billing.customers c ON c.id = i.customer_id
WHERE c.external_id = 'wallet-co' AND i.invoice_type = 'subscription' \gset
SELECT status FROM billing.void_invoice(:wallet_invoice);
SELECT external_id FROM billing.create_wallet('wallet-co', 'promo', granted_credits => 7, expiration_at => now() + interval '1 day');
SELECT expired FROM billing.run_wallets(now() + interval '2 days');
SELECT wallet_external_id, transaction_type, transaction_status, status, source, credits, amount, invoice_number, reason
FROM billing_bi.wallet_transactions ORDER BY transaction_id;
SELECT wallet_external_id, status, credits_balance, balance_amount FROM billing_bi.wallets ORDER BY 1;
SELECT count(*) AS discrepancies FROM billing.wallet_discrepancies();
-- authorize on the distributed tables: 10 calls cost 1.00; beyond a 2.00 cap, refused.
SELECT amount FROM billing.set_spend_cap('sub-wallet', 2);
SELECT billing.ingest_event('sub-wallet', 'calls', 'now-1', now() - interval '1 second');
SELECT billing.authorize('sub-wallet', 'calls', 10);
SELECT billing.authorize('sub-wallet', 'calls', 20);
SELECT type, count(*) FROM billing.outbox WHERE type LIKE 'wallet.%' OR type LIKE 'spend%' GROUP BY 1 ORDER BY 1;
-- Real-time burn-down on the distributed tables: a wallet of 1,000 credits at 0.01 pays 10
-- calls (1.00) as they are ingested, in one consumed row; a 2.00 cap enforced at ingestion
-- refuses 15 more (the period at 2.50).
SELECT external_id FROM billing.create_customer('burn-co', 'Burn Co', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('sub-burn', 'burn-co', 'walleted', date_trunc('month', now()));
SELECT external_id, burn_down FROM billing.create_wallet('burn-co', 'live', 0.01, burn_down => true, granted_credits => 1000);
SELECT realtime FROM billing.subscription_directory WHERE external_id = 'sub-burn';
SELECT count(*) FROM billing.ingest_events((SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 'sub-burn', 'code', 'calls',
  'transaction_id', 'b-' || n, 'timestamp', date_trunc('month', now()))) FROM generate_series(1, 10) n));
SELECT transaction_status, credits, amount FROM billing_bi.wallet_transactions WHERE wallet_external_id = 'burn-co/live' ORDER BY transaction_id;
SELECT amount, enforce_on_ingestion FROM billing.set_spend_cap('sub-burn', 2, enforce_on_ingestion => true);
SELECT count(*) FROM billing.ingest_events((SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 'sub-burn', 'code', 'calls',
  'transaction_id', 'c-' || n, 'timestamp', date_trunc('month', now()))) FROM generate_series(1, 15) n));
SELECT billing.ingest_event('sub-burn', 'calls', 'd-1', date_trunc('month', now()));
SELECT credits_balance FROM billing_bi.wallets WHERE wallet_external_id = 'burn-co/live';
SELECT count(*) AS discrepancies FROM billing.wallet_discrepancies();
