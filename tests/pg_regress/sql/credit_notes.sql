-- Credit notes, worked out by hand in the comments: per-fee items never above what is left
-- creditable, taxes in proportion rounded on the invoice's running sum (so that crediting
-- everything gives back exactly the invoice), refund and credit, the credit consumed by
-- later invoices oldest first (after tax), voiding; the errors, which write nothing.
SET client_min_messages = warning;
DROP EXTENSION pg_billing CASCADE;
CREATE EXTENSION pg_billing;
SET TIME ZONE 'UTC';
SET datestyle = 'ISO, YMD';
\set SHOW_CONTEXT never

SELECT code FROM billing.create_billable_metric('calls', 'API calls', 'count');
SELECT code FROM billing.create_tax('vat', 'VAT', 20);
SELECT code FROM billing.create_tax('ten', 'Ten', 10);
SELECT billing.set_taxes('billing_entity', 'default', '{vat}');
SELECT version FROM billing.create_plan('seats', 'Seats', 'monthly', 100, 'EUR',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.10"}}]');
SELECT external_id FROM billing.create_customer('c1', 'One', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('s1', 'c1', 'seats', '2026-03-01 00:00+00');
SELECT count(*) FROM billing.ingest_events((SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 's1', 'code', 'calls',
  'transaction_id', 'c-' || n, 'timestamp', '2026-03-10T10:00:00Z')) FROM generate_series(1, 50) n));

CREATE TEMP VIEW notes AS
SELECT cn.number, cn.reason, cn.sub_total_excluding_taxes, cn.taxes_amount, cn.total_amount, cn.refund_amount, cn.credit_amount,
       cn.balance_amount, cn.credit_status
FROM billing.credit_notes cn ORDER BY cn.id;
CREATE FUNCTION pg_temp.fee(invoice_number text, kind text) RETURNS bigint LANGUAGE sql AS $$
  SELECT f.id FROM billing.fees f JOIN billing.invoices i ON i.customer_id = f.customer_id AND i.id = f.invoice_id
  WHERE i.number = invoice_number AND f.fee_type::text = kind ORDER BY f.id LIMIT 1
$$;

-- March: base 100.00 + 50 calls × 0.10 = 5.00; VAT 21.00; total 126.00 (INV-001-001).
SELECT number, fees_amount, taxes_amount, total_amount FROM billing.bill_subscription('s1', '2026-04-01 00:05+00');

-- CN1: 30.00 of the base fee, all credit: tax 30 × 20% = 6.00, total 36.00.
SELECT number, sub_total_excluding_taxes, taxes_amount, total_amount, credit_amount, credit_status
FROM billing.create_credit_note((SELECT id FROM billing.invoices WHERE number = 'INV-001-001'),
  jsonb_build_array(jsonb_build_object('fee_id', pg_temp.fee('INV-001-001', 'subscription'), 'amount', '30.00')), 'order_change');
-- More than what is left of the base fee (70.00): 23514, nothing written.
SELECT billing.create_credit_note((SELECT id FROM billing.invoices WHERE number = 'INV-001-001'),
  jsonb_build_array(jsonb_build_object('fee_id', pg_temp.fee('INV-001-001', 'subscription'), 'amount', '70.01')), 'order_change');
-- A refund needs a paid invoice.
SELECT billing.create_credit_note((SELECT id FROM billing.invoices WHERE number = 'INV-001-001'),
  jsonb_build_array(jsonb_build_object('fee_id', pg_temp.fee('INV-001-001', 'charge'), 'amount', '5.00')), 'other', refund => 1);
-- CN2: the rest, 70.00 of the base fee and the 5.00 of calls: tax 14.00 + 1.00 = 15.00
-- (running sum 6 + 15 = 21 → 21.00, less the 6.00 of CN1), total 90.00, all credit. The two
-- credit notes give back exactly the invoice: 36.00 + 90.00 = 126.00.
SELECT number, sub_total_excluding_taxes, taxes_amount, total_amount, credit_amount
FROM billing.create_credit_note((SELECT id FROM billing.invoices WHERE number = 'INV-001-001'), jsonb_build_array(
  jsonb_build_object('fee_id', pg_temp.fee('INV-001-001', 'subscription'), 'amount', '70.00'),
  jsonb_build_object('fee_id', pg_temp.fee('INV-001-001', 'charge'), 'amount', '5.00')), 'product_unsatisfactory', description => 'outage');
SELECT sum(total_amount) AS credited, (SELECT total_amount FROM billing.invoices WHERE number = 'INV-001-001') AS invoiced
FROM billing.credit_notes;
-- Nothing is left creditable.
SELECT billing.create_credit_note((SELECT id FROM billing.invoices WHERE number = 'INV-001-001'),
  jsonb_build_array(jsonb_build_object('fee_id', pg_temp.fee('INV-001-001', 'charge'), 'amount', '0.01')), 'other');

-- The credit is consumed by the next invoices, oldest first, after tax. April: 100.00, VAT
-- 20.00, 120.00: CN1 36.00 (consumed), CN2 84.00 of 90.00 → total 0.00. May: 120.00, CN2's
-- last 6.00 → 114.00. June: 120.00.
SELECT number, sub_total_including_taxes, credit_notes_amount, total_amount FROM billing.bill_subscription('s1', '2026-07-01 00:05+00');
SELECT * FROM notes;
SELECT n ->> 'number' AS credit_note, n ->> 'amount' AS amount
FROM billing.invoices i, jsonb_array_elements(billing.invoice_document(i.id) -> 'credit_notes') n WHERE i.number = 'INV-001-002';

-- Taxes rounded on the running sum: a one-off item of 0.05 taxed 10% (exact tax 0.005 →
-- 0.01; total 0.06), credited in three notes of 0.02, 0.02 and 0.01: exact taxes 0.002,
-- 0.002, 0.001; running sums 0.002 → 0.00, 0.004 → 0.00, 0.005 → 0.01: taxes 0.00, 0.00,
-- 0.01 (rounding each note alone would give back no tax at all). Totals 0.02 + 0.02 + 0.02
-- = 0.06. The last one is refunded: the invoice was paid.
SELECT external_id FROM billing.create_customer('c2', 'Two', 'EUR', 'UTC');
SELECT number, fees_amount, taxes_amount, total_amount
FROM billing.create_one_off_invoice('c2', '[{"description": "Tiny", "unit_amount": "0.05", "tax_codes": ["ten"]}]');
SELECT payment_status FROM billing.set_payment_status((SELECT id FROM billing.invoices WHERE number = 'INV-002-001'), 'succeeded');
SELECT c.number, c.taxes_amount, c.total_amount, c.refund_amount, c.credit_amount
FROM (VALUES (1, '0.02', 0), (2, '0.02', 0), (3, '0.01', 0.02)) v(n, a, r),
     LATERAL billing.create_credit_note((SELECT id FROM billing.invoices WHERE number = 'INV-002-001'),
       jsonb_build_array(jsonb_build_object('fee_id', pg_temp.fee('INV-002-001', 'add_on'), 'amount', v.a)), 'other', refund => v.r) c
ORDER BY v.n;

-- Voiding what is left; a consumed note has nothing to void.
SELECT number, balance_amount, credit_status FROM billing.void_credit_note((SELECT id FROM billing.credit_notes WHERE number = 'INV-002-001-CN1'));
SELECT billing.void_credit_note((SELECT id FROM billing.credit_notes WHERE number = 'INV-001-001-CN1'));
SELECT billing.void_credit_note(-1);

-- Terminating a plan paid in advance credits the unused days after the termination day.
-- Plan advance: 31.00 a month in advance (1.00 a day in March), calls at 0.10. March 1:
-- 31.00, VAT 6.20, 37.20. 50 calls; terminated on March 20: March 21–31 unused, 11 days →
-- 11.00, VAT 2.20, credit note 13.20 (order_cancellation). The termination invoice (the 50
-- calls: 5.00, VAT 1.00, 6.00) consumes 6.00 of it first: total 0.00, 7.20 left.
SELECT version FROM billing.create_plan('advance', 'Advance', 'monthly', 31, 'EUR',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.10"}}]', pay_in_advance => true);
SELECT external_id FROM billing.create_customer('c3', 'Three', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('s3', 'c3', 'advance', '2026-03-01 00:00+00');
SELECT number, total_amount FROM billing.bill_subscription('s3', '2026-03-01 00:05+00');
SELECT count(*) FROM billing.ingest_events((SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 's3', 'code', 'calls',
  'transaction_id', 't-' || n, 'timestamp', '2026-03-05T10:00:00Z')) FROM generate_series(1, 50) n));
SELECT status FROM billing.terminate_subscription('s3', '2026-03-20 12:00+00');
SELECT number, reason, sub_total_excluding_taxes, taxes_amount, total_amount, balance_amount, credit_status
FROM billing_bi.credit_notes WHERE customer_external_id = 'c3';
SELECT number, sub_total_including_taxes, credit_notes_amount, total_amount
FROM billing.invoices WHERE customer_id = (SELECT id FROM billing.customers WHERE external_id = 'c3') ORDER BY id;
-- Once: billing the subscription again credits nothing more.
SELECT count(*) FROM billing.bill_subscription('s3', '2026-04-01 00:05+00');
SELECT count(*) AS termination_credit_notes FROM billing.credit_notes WHERE unused_days_fee_id IS NOT NULL;

-- The invoice, not only each fee, bounds what its credit notes take. Plan trio: calls at
-- 0.10 per project; c4 has a 10.00 coupon; 100 calls in each of 3 projects: fees 10.00 ×
-- 3, coupon 3.33333 on each, VAT 20% of 20.00 = 4.00, total 24.00. Each fee is creditable
-- up to round(6.66667) = 6.67, but the three together only up to 20.00: 6.67 × 3 = 20.01
-- is refused (23514); 6.67 + 6.67 + 6.66 = 20.00, VAT 4.00, gives back the 24.00.
SELECT version FROM billing.create_plan('trio', 'Trio', 'monthly', 0, 'EUR',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "pricing_group_keys": ["project"], "properties": {"amount": "0.10"}}]');
SELECT external_id FROM billing.create_customer('c4', 'Four', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('s4', 'c4', 'trio', '2026-03-01 00:00+00');
SELECT code FROM billing.create_coupon('ten-off', '10 off', 'fixed_amount', amount => 10, currency => 'EUR');
SELECT status FROM billing.apply_coupon('c4', 'ten-off');
SELECT count(*) FROM billing.ingest_events((SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 's4', 'code', 'calls',
  'transaction_id', p || '-' || n, 'timestamp', '2026-03-05T10:00:00Z', 'properties', jsonb_build_object('project', p)))
  FROM unnest(ARRAY['a', 'b', 'c']) p, generate_series(1, 100) n));
SELECT number, fees_amount, coupons_amount, taxes_amount, total_amount FROM billing.bill_subscription('s4', '2026-04-01 00:05+00');
CREATE TEMP TABLE c4_fees AS
SELECT f.id, row_number() OVER (ORDER BY f.id) AS n FROM billing.fees f JOIN billing.invoices i ON i.customer_id = f.customer_id AND i.id = f.invoice_id
WHERE i.number = 'INV-004-001' AND f.fee_type = 'charge';
SELECT billing.create_credit_note((SELECT id FROM billing.invoices WHERE number = 'INV-004-001'),
  (SELECT jsonb_agg(jsonb_build_object('fee_id', id, 'amount', '6.67')) FROM c4_fees), 'other');
SELECT number, sub_total_excluding_taxes, taxes_amount, total_amount FROM billing.create_credit_note(
  (SELECT id FROM billing.invoices WHERE number = 'INV-004-001'),
  (SELECT jsonb_agg(jsonb_build_object('fee_id', id, 'amount', CASE WHEN n = 3 THEN '6.66' ELSE '6.67' END)) FROM c4_fees), 'other');
-- An invoice with credit notes is not voided: their credit would outlive it.
SELECT billing.void_invoice((SELECT id FROM billing.invoices WHERE number = 'INV-004-001'));

-- Errors: nothing is written.
SELECT billing.create_credit_note(-1, '[]', 'other');
SELECT billing.create_credit_note((SELECT id FROM billing.invoices WHERE number = 'INV-001-003'), '[]', 'other');
SELECT billing.create_credit_note((SELECT id FROM billing.invoices WHERE number = 'INV-001-003'), '[{"fee_id": 1, "amount": "1"}]', 'mistake');
SELECT billing.create_credit_note((SELECT id FROM billing.invoices WHERE number = 'INV-001-003'),
  jsonb_build_array(jsonb_build_object('fee_id', pg_temp.fee('INV-001-001', 'charge'), 'amount', '1')), 'other');
SELECT billing.create_credit_note((SELECT id FROM billing.invoices WHERE number = 'INV-001-003'),
  jsonb_build_array(jsonb_build_object('fee_id', pg_temp.fee('INV-001-003', 'subscription'), 'amount', '1.001')), 'other');
SELECT billing.create_credit_note((SELECT id FROM billing.invoices WHERE number = 'INV-001-003'),
  jsonb_build_array(jsonb_build_object('fee_id', pg_temp.fee('INV-001-003', 'subscription'), 'amount', 'x')), 'other');
SELECT billing.create_credit_note((SELECT id FROM billing.invoices WHERE number = 'INV-001-003'),
  jsonb_build_array(jsonb_build_object('fee_id', pg_temp.fee('INV-001-003', 'subscription'), 'amount', '10')), 'other', credit => 5);
SELECT billing.create_credit_note((SELECT id FROM billing.invoices WHERE number = 'INV-001-003'),
  jsonb_build_array(jsonb_build_object('fee_id', pg_temp.fee('INV-001-003', 'subscription'), 'amount', '10')), 'other', refund => 0.001);
SELECT billing.create_credit_note((SELECT id FROM billing.invoices WHERE number = 'INV-001-003'), jsonb_build_array(
  jsonb_build_object('fee_id', pg_temp.fee('INV-001-003', 'subscription'), 'amount', '1'),
  jsonb_build_object('fee_id', pg_temp.fee('INV-001-003', 'subscription'), 'amount', '2')), 'other');
SELECT status FROM billing.void_invoice((SELECT id FROM billing.invoices WHERE number = 'INV-001-003'));
SELECT billing.create_credit_note((SELECT id FROM billing.invoices WHERE number = 'INV-001-003'),
  jsonb_build_array(jsonb_build_object('fee_id', pg_temp.fee('INV-001-003', 'subscription'), 'amount', '10')), 'other');
SELECT count(*) AS credit_notes, (SELECT count(*) FROM billing.credit_note_items) AS items FROM billing.credit_notes;
SELECT type, count(*) FROM billing.outbox WHERE type LIKE 'credit_note%' GROUP BY type;

-- The invariant of every finalized invoice (tests/pg_regress/invariant.sql).
\i tests/pg_regress/invariant.sql
