-- Whole invoices, each worked out by hand from pricing.md in the comment above it: base fees
-- (in arrears and in advance, calendar and anniversary, prorated, trials, termination),
-- usage (graduated, package, recurring prorated), minimums, late events, currencies without
-- cents, a time zone across a DST change; the lifecycle (drafts, numbering, immutability,
-- voiding, payment status), the outbox and the billing run's idempotency.
SET client_min_messages = warning;
DROP EXTENSION pg_billing CASCADE;
CREATE EXTENSION pg_billing;
SET TIME ZONE 'UTC';
SET datestyle = 'ISO, YMD';
\set SHOW_CONTEXT never

SELECT count(*) FROM (
  SELECT billing.create_billable_metric('calls', 'API calls', 'count')
  UNION ALL SELECT billing.create_billable_metric('gb', 'Storage GB', 'sum', 'gb')
  UNION ALL SELECT billing.create_billable_metric('seats', 'Seats', 'sum', 'seats', recurring => true)
) created;

-- An invoice's lines and its totals, per subscription.
CREATE TEMP VIEW lines AS
SELECT s.external_id AS sub, i.billing_at, f.fee_type, f.description, f.units, f.precise_amount, f.amount
FROM billing.fees f
JOIN billing.invoices i ON i.customer_id = f.customer_id AND i.id = f.invoice_id
JOIN billing.subscriptions s ON s.customer_id = f.customer_id AND s.id = f.subscription_id
WHERE f.invoiceable
ORDER BY i.billing_at, f.fee_type, f.charge_id NULLS FIRST, f.id;
CREATE TEMP VIEW totals AS
SELECT s.external_id AS sub, i.billing_at, i.status, i.number, i.issuing_date, i.due_date, i.fees_amount, i.total_amount
FROM billing.invoices i JOIN billing.subscriptions s ON s.customer_id = i.customer_id AND s.id = i.subscription_id
ORDER BY s.external_id, i.billing_at;

-- Sends `n` events of metric `code` at `ts` with `props` to subscription `sub`.
CREATE FUNCTION pg_temp.send(sub text, code text, n integer, ts timestamptz, props jsonb DEFAULT '{}', tag text DEFAULT '')
RETURNS bigint LANGUAGE sql AS $$
  SELECT count(*) FILTER (WHERE r.status = 'accepted') FROM billing.ingest_events((
    SELECT jsonb_agg(jsonb_build_object('external_subscription_id', sub, 'code', code,
                                        'transaction_id', format('%s-%s-%s-%s%s', sub, code, ts, i, tag),
                                        'timestamp', ts, 'properties', props))
    FROM generate_series(1, n) i)) r
$$;

-- 1. A calendar month (February 2024, 29 days) in arrears: base 49 + graduated calls + package GB.
--    calls 250, ranges 0–100 @0 +0, 101–1000 @0.01 +2: tier 1 100 units → 0; tier 2
--    250 − 101 + 1 = 150 units × 0.01 + 2 = 3.50.
--    gb 3 × 12.5 = 37.5, package 5 per 10, 5 free: paid 32.5 → 4 packages → 20.00.
--    Invoice on 2024-03-01: 49 + 3.50 + 20.00 = 72.50.
SELECT external_id FROM billing.create_customer('c1', 'Calendar Co', 'USD', 'UTC');
SELECT version FROM billing.create_plan('usage', 'Usage', 'monthly', 49, 'USD', '[
  {"billable_metric_code": "calls", "charge_model": "graduated", "properties": {"graduated_ranges": [
     {"from_value": 0, "to_value": 100, "per_unit_amount": "0", "flat_amount": "0"},
     {"from_value": 101, "to_value": 1000, "per_unit_amount": "0.01", "flat_amount": "2"},
     {"from_value": 1001, "to_value": null, "per_unit_amount": "0.005", "flat_amount": "0"}]}},
  {"billable_metric_code": "gb", "charge_model": "package", "properties": {"amount": "5", "package_size": 10, "free_units": 5}}]');
SELECT status FROM billing.create_subscription('s1', 'c1', 'usage', '2024-02-01 00:00+00');
SELECT pg_temp.send('s1', 'calls', 250, '2024-02-10 08:00+00'), pg_temp.send('s1', 'gb', 3, '2024-02-20 08:00+00', '{"gb": "12.5"}');
SELECT billing_at, status, number, fees_amount, total_amount FROM billing.bill_subscription('s1', '2024-03-01 00:05+00');
SELECT * FROM lines WHERE sub = 's1';
-- The graduated line's tiers, as invoice_document shows them.
SELECT jsonb_path_query(billing.invoice_document(i.id), '$.lines[*] ? (@.metric_code == "calls").details.graduated_ranges[*].total_with_flat_amount')
FROM billing.invoices i JOIN billing.subscriptions s ON s.id = i.subscription_id WHERE s.external_id = 's1';

-- 2. In advance: 30 a month from 2024-03-01, calls at 0.5 in arrears.
--    2024-03-01: March's base fee 30.00 in advance.
--    2024-04-01: April's base fee 30.00 + March's 10 calls × 0.5 = 5.00 → 35.00.
SELECT external_id FROM billing.create_customer('c2', 'Advance Co', 'USD', 'UTC');
SELECT version FROM billing.create_plan('advance', 'Advance', 'monthly', 30, 'USD',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.5"}}]', pay_in_advance => true);
SELECT status FROM billing.create_subscription('s2', 'c2', 'advance', '2024-03-01 00:00+00');
SELECT pg_temp.send('s2', 'calls', 10, '2024-03-31 23:00+00');
SELECT billing_at, fees_amount FROM billing.bill_subscription('s2', '2024-03-01 00:05+00');
SELECT billing_at, fees_amount FROM billing.bill_subscription('s2', '2024-04-01 00:05+00');
SELECT * FROM lines WHERE sub = 's2';

-- 3. A first calendar period prorated: 100 a month in arrears from 2022-03-15 (UTC) →
--    17 of March's 31 days: 100 × 17 / 31 = 54.8387… → 54.84. April in full: 100.00.
SELECT external_id FROM billing.create_customer('c3', 'Prorated Co', 'USD', 'UTC');
SELECT version FROM billing.create_plan('hundred', 'Hundred', 'monthly', 100, 'USD');
SELECT status FROM billing.create_subscription('s3', 'c3', 'hundred', '2022-03-15 09:30+00');
SELECT billing_at, fees_amount FROM billing.bill_subscription('s3', '2022-05-01 00:05+00');
SELECT * FROM lines WHERE sub = 's3';

-- 4. A trial: 50 a month in advance, 10 trial days from 2024-04-05 → the trial ends
--    2024-04-15 00:00; nothing at the start; at the trial's end April 15–30 (16 of 30 days):
--    50 × 16 / 30 = 26.666… → 26.67; May in full on 2024-05-01: 50.00.
SELECT external_id FROM billing.create_customer('c4', 'Trial Co', 'USD', 'UTC');
SELECT version FROM billing.create_plan('trial', 'Trial', 'monthly', 50, 'USD', pay_in_advance => true, trial_days => 10);
SELECT status FROM billing.create_subscription('s4', 'c4', 'trial', '2024-04-05 00:00+00');
SELECT count(*) AS during_trial FROM billing.bill_subscription('s4', '2024-04-14 23:59+00');
SELECT billing_at, fees_amount FROM billing.bill_subscription('s4', '2024-05-01 00:05+00');
SELECT * FROM lines WHERE sub = 's4';

-- 5. Anniversary from 2024-01-31 across February (29 to 31 a month, in arrears): the
--    periods end the day before the anniversary, on the last day of shorter months:
--    Jan 31 – Feb 28 (billed 2024-02-29), Feb 29 – Mar 30 (billed 2024-03-31), Mar 31 –
--    Apr 29 (billed 2024-04-30); each a full period: 29.00 each.
SELECT external_id FROM billing.create_customer('c5', 'Anniversary Co', 'USD', 'UTC');
SELECT version FROM billing.create_plan('anniv', 'Anniversary', 'monthly', 29, 'USD');
SELECT status FROM billing.create_subscription('s5', 'c5', 'anniv', '2024-01-31 00:00+00', billing_time => 'anniversary');
SELECT billing_at, fees_amount FROM billing.bill_subscription('s5', '2024-04-30 00:05+00');
SELECT i.subscription_from, i.subscription_to FROM billing.invoices i JOIN billing.subscriptions s ON s.id = i.subscription_id
WHERE s.external_id = 's5' ORDER BY i.billing_at;

-- 6. Termination mid-period in arrears: 31 a month from 2024-03-01, calls at 1, terminated
--    2024-03-10 15:00 → March 1–10, 10 of 31 days: 31 × 10 / 31 = 10.00; the 4 calls before
--    the termination: 4.00. The final invoice is created by the termination itself.
SELECT external_id FROM billing.create_customer('c6', 'Leaving Co', 'USD', 'UTC');
SELECT version FROM billing.create_plan('leaving', 'Leaving', 'monthly', 31, 'USD',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "1"}}]');
SELECT status FROM billing.create_subscription('s6', 'c6', 'leaving', '2024-03-01 00:00+00');
SELECT pg_temp.send('s6', 'calls', 4, '2024-03-10 14:00+00');
SELECT status, terminated_at FROM billing.terminate_subscription('s6', '2024-03-10 15:00+00');
SELECT sub, billing_at, status, fees_amount FROM totals WHERE sub = 's6';
SELECT * FROM lines WHERE sub = 's6';

-- 7. A recurring prorated charge (seats at 1 each, the plan free), pricing.md's example:
--    April 2024 (30 days): 5 seats added April 1 → 5 × 30/30 = 5.
--    May (31 days): the 5 carried in, and two events of 12 on May 26 (6 days to the end) →
--    5 + 2 × 12 × 6 / 31 = 9.645161… rounded up at 5 decimals: 9.64517 units → 9.65.
SELECT external_id FROM billing.create_customer('c7', 'Seats Co', 'USD', 'UTC');
SELECT version FROM billing.create_plan('seats', 'Seats', 'monthly', 0, 'USD',
  '[{"billable_metric_code": "seats", "charge_model": "standard", "prorated": true, "properties": {"amount": "1"}}]');
SELECT status FROM billing.create_subscription('s7', 'c7', 'seats', '2024-04-01 00:00+00');
SELECT pg_temp.send('s7', 'seats', 1, '2024-04-01 10:00+00', '{"seats": 5}'),
       pg_temp.send('s7', 'seats', 2, '2024-05-26 10:00+00', '{"seats": 12}');
SELECT billing_at, fees_amount FROM billing.bill_subscription('s7', '2024-06-01 00:05+00');
SELECT * FROM lines WHERE sub = 's7';

-- 8. A charge's minimum spend: calls at 0.1 with min_amount 20, 50 calls in June 2024 →
--    5.00, true-up 20 − 5 = 15.00 → 20.00.
SELECT external_id FROM billing.create_customer('c8', 'Minimum Co', 'USD', 'UTC');
SELECT version FROM billing.create_plan('minspend', 'Minimum spend', 'monthly', 0, 'USD',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "min_amount": "20", "properties": {"amount": "0.1"}}]');
SELECT status FROM billing.create_subscription('s8', 'c8', 'minspend', '2024-06-01 00:00+00');
SELECT pg_temp.send('s8', 'calls', 50, '2024-06-11 00:00+00');
SELECT billing_at, fees_amount FROM billing.bill_subscription('s8', '2024-07-01 00:05+00');
SELECT * FROM lines WHERE sub = 's8';

-- 9. A plan minimum commitment over a partial first period: base 10 a month in arrears,
--    commitment 100, calls at 0.1, from 2024-06-16 (15 of June's 30 days): base
--    10 × 15/30 = 5.00, 50 calls → 5.00; commitment round(100 × 15/30) = 50.00 → true-up
--    50 − (5 + 5) = 40.00 → 50.00.
SELECT external_id FROM billing.create_customer('c9', 'Commitment Co', 'USD', 'UTC');
SELECT version FROM billing.create_plan('commit', 'Commitment', 'monthly', 10, 'USD',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.1"}}]', minimum_commitment => 100);
SELECT status FROM billing.create_subscription('s9', 'c9', 'commit', '2024-06-16 00:00+00');
SELECT pg_temp.send('s9', 'calls', 50, '2024-06-20 00:00+00');
SELECT billing_at, fees_amount FROM billing.bill_subscription('s9', '2024-07-01 00:05+00');
SELECT * FROM lines WHERE sub = 's9';

-- 10. Late events, with a grace period of 3 days and numbering per entity (LATE-YYYYMM-nnnn),
--     payment within 30 days. Calls at 1 in arrears, from 2024-03-01.
--     March: 10 calls → a draft of 10.00 on 2024-04-01, no number.
--     A late March call lands in the draft: refresh → 11.00.
--     After the grace period (2024-04-04 00:05) the run finalizes it: LATE-202404-0001,
--     due 2024-05-01.
--     Another late March call, after finalization: May 1st's invoice bills April's 2 calls and
--     an adjustment of 1 call for March → 3.00, LATE-202405-0001.
SELECT code FROM billing.create_billing_entity('late', 'Late Ltd', invoice_prefix => 'LATE', numbering => 'per_entity',
                                               grace_period_days => 3, net_payment_term_days => 30);
SELECT external_id FROM billing.create_customer('c10', 'Late Co', 'USD', 'UTC', billing_entity => 'late');
SELECT version FROM billing.create_plan('percall', 'Per call', 'monthly', 0, 'USD',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "1"}}]');
SELECT status FROM billing.create_subscription('s10', 'c10', 'percall', '2024-03-01 00:00+00');
SELECT pg_temp.send('s10', 'calls', 10, '2024-03-15 00:00+00');
SELECT billing_at, status, number, fees_amount FROM billing.bill_subscription('s10', '2024-04-01 00:05+00');
SELECT pg_temp.send('s10', 'calls', 1, '2024-03-31 22:00+00', tag => 'late1');
SELECT status, number, fees_amount FROM billing.refresh_invoice((SELECT i.id FROM billing.invoices i JOIN billing.subscriptions s ON s.id = i.subscription_id WHERE s.external_id = 's10'));
CALL billing.finalize_drafts('2024-04-03 00:05+00');
SELECT sub, status, number FROM totals WHERE sub = 's10';
CALL billing.finalize_drafts('2024-04-04 00:05+00');
SELECT sub, billing_at, status, number, issuing_date, due_date, fees_amount FROM totals WHERE sub = 's10';
SELECT pg_temp.send('s10', 'calls', 1, '2024-03-30 12:00+00', tag => 'late2'), pg_temp.send('s10', 'calls', 2, '2024-04-15 00:00+00');
SELECT billing_at, status, fees_amount FROM billing.bill_subscription('s10', '2024-05-01 00:05+00');
SELECT * FROM lines WHERE sub = 's10';
-- Billing again changes nothing: the adjustment is billed once.
SELECT count(*) FROM billing.bill_subscription('s10', '2024-05-01 00:06+00');
SELECT count(*) FILTER (WHERE fee_type = 'adjustment') AS adjustments FROM billing.fees;
-- A terminated subscription has no next invoice: a late call for s6's last period (before
-- its termination on 2024-03-10 15:00) is billed on an invoice of its own, once.
SELECT pg_temp.send('s6', 'calls', 1, '2024-03-09 12:00+00', tag => 'late');
SELECT billing_at, status, fees_amount FROM billing.bill_subscription('s6', '2024-03-20 00:00+00');
SELECT * FROM lines WHERE sub = 's6';
SELECT count(*) FROM billing.bill_subscription('s6', '2024-03-21 00:00+00');

-- 11. JPY (no minor unit): 1000 a month in arrears from 2024-03-15 → 1000 × 17/31 =
--     548.387… → 548; 7 calls at 0.5 = 3.5 → 4 (half up); total 552.
SELECT external_id FROM billing.create_customer('c11', 'Yen KK', 'JPY', 'Asia/Tokyo');
SELECT version FROM billing.create_plan('yen', 'Yen', 'monthly', 1000, 'JPY',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.5"}}]');
SELECT status FROM billing.create_subscription('s11', 'c11', 'yen', '2024-03-15 00:00+09');
SELECT pg_temp.send('s11', 'calls', 7, '2024-03-20 00:00+09');
SELECT billing_at, fees_amount FROM billing.bill_subscription('s11', '2024-04-01 00:05+09');
SELECT * FROM lines WHERE sub = 's11';

-- 11b. KWD (three decimals): 10 a month in arrears from 2024-03-15 → 10 × 17/31 =
--      5.4838… → 5.484; 3 calls at 0.0125 = 0.0375 → 0.038 (half up); total 5.522.
SELECT external_id FROM billing.create_customer('c11b', 'Dinar Co', 'KWD', 'Asia/Kuwait');
SELECT version FROM billing.create_plan('dinar', 'Dinar', 'monthly', 10, 'KWD',
  '[{"billable_metric_code": "calls", "charge_model": "standard", "properties": {"amount": "0.0125"}}]');
SELECT status FROM billing.create_subscription('s11b', 'c11b', 'dinar', '2024-03-15 00:00+03');
SELECT pg_temp.send('s11b', 'calls', 3, '2024-03-20 00:00+03');
SELECT billing_at, fees_amount FROM billing.bill_subscription('s11b', '2024-04-01 00:05+03');
SELECT * FROM lines WHERE sub = 's11b';

-- 12. America/New_York across the DST change of 2024-03-10: the March period runs from
--     2024-03-01 00:00 EST (05:00 UTC) to 2024-03-31 23:59:59.999999 EDT (04:00 UTC on April 1):
--     a call at 03:30 UTC on April 1 (23:30 on March 31 in New York) is March's; one at
--     04:30 UTC (00:30 on April 1) is April's. Base 31 full + 1 call at 1 → 32.00, billed at
--     2024-04-01 04:00 UTC, issued 2024-04-01.
SELECT external_id FROM billing.create_customer('c12', 'Eastern Inc', 'USD', 'America/New_York');
SELECT status FROM billing.create_subscription('s12', 'c12', 'leaving', '2024-03-01 00:00-05');
SELECT pg_temp.send('s12', 'calls', 1, '2024-04-01 03:30+00'), pg_temp.send('s12', 'calls', 1, '2024-04-01 04:30+00');
SELECT billing_at, issuing_date, charges_from, charges_to, fees_amount FROM billing.bill_subscription('s12', '2024-04-01 05:00+00');

-- The billing run bills what is due and nothing twice: every subscription up to May 2024,
-- then again. A subscription that cannot be billed (here a trigger refuses s3's fees) is
-- rolled back alone, recorded with its reason, and stops nothing; once it can be billed, the
-- next run bills it and clears its failure.
CREATE FUNCTION regress_refuse_fees() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.subscription_id = (SELECT id FROM billing.subscriptions WHERE external_id = 's3') THEN
    RAISE EXCEPTION 'fees of s3 refused' USING ERRCODE = '23514', DETAIL = 'a test trigger';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER regress_refuse_fees BEFORE INSERT ON billing.fees FOR EACH ROW EXECUTE FUNCTION regress_refuse_fees();
SELECT count(*) AS invoices_before FROM billing.invoices;
CALL billing.run_billing('2024-05-01 00:05+00');
SELECT count(*) AS invoices_after_run, count(*) FILTER (WHERE sub = 's3') AS of_s3 FROM totals;
SELECT s.external_id, f.as_of, f.sqlstate, f.message, f.detail FROM billing.billing_failures f
JOIN billing.subscriptions s ON s.customer_id = f.customer_id AND s.id = f.subscription_id;
DROP TRIGGER regress_refuse_fees ON billing.fees;
DROP FUNCTION regress_refuse_fees();
CALL billing.run_billing('2024-05-01 00:05+00');
SELECT count(*) AS invoices_after_run, count(*) FILTER (WHERE sub = 's3') AS of_s3,
       count(DISTINCT (sub, billing_at)) AS distinct_keys FROM totals;
CALL billing.run_billing('2024-05-01 00:05+00');
SELECT count(*) AS invoices_after_rerun FROM billing.invoices;
SELECT count(*) AS failures FROM billing.billing_failures;
-- Totals are sums of the rounded invoiceable fees, on every invoice.
SELECT count(*) AS invoices_off_their_fees FROM billing.invoices i
WHERE i.fees_amount <> (SELECT coalesce(sum(f.amount), 0) FROM billing.fees f WHERE f.customer_id = i.customer_id AND f.invoice_id = i.id AND f.invoiceable)
   OR i.total_amount <> i.fees_amount;

-- Numbering per customer (INV-<customer>-nnn), gapless, at finalization only; numbers past
-- the padding keep every digit.
SELECT billing._zero_padded(7, 3), billing._zero_padded(1000, 3), billing._zero_padded(12345, 4);
SELECT sub, count(*), min(number), max(number) FROM totals WHERE sub IN ('s3', 's5') GROUP BY sub ORDER BY sub;

-- Lifecycle: finalized invoices and their fees are immutable; payment status and voiding.
SELECT id AS s1_invoice FROM billing.invoices i WHERE i.number = 'INV-001-001' \gset
UPDATE billing.invoices SET total_amount = 0 WHERE id = :s1_invoice;
DELETE FROM billing.fees WHERE invoice_id = :s1_invoice;
SELECT billing.refresh_invoice(:s1_invoice);
SELECT billing.set_payment_status(:s1_invoice, 'paid');
SELECT status, payment_status FROM billing.set_payment_status(:s1_invoice, 'succeeded');
SELECT billing.void_invoice(:s1_invoice);
SELECT status, payment_status FROM billing.set_payment_status(:s1_invoice, 'failed');
SELECT status, number, total_amount FROM billing.void_invoice(:s1_invoice);
SELECT billing.finalize_invoice(:s1_invoice);
SELECT billing.invoice_document(-1);
-- Voided invoices leave the revenue views.
SELECT month, currency, invoices, total_amount FROM billing_bi.revenue_by_month WHERE month >= '2024-01-01' ORDER BY month, currency;

-- The outbox: one event per change, in the transaction that made it.
SELECT type, count(*) FROM billing.outbox GROUP BY type ORDER BY type;
SELECT payload - 'invoice_id' - 'customer_external_id' AS payload FROM billing.outbox WHERE customer_id = (SELECT id FROM billing.customers WHERE external_id = 'c1') ORDER BY id;

-- The invariant of every finalized invoice (tests/pg_regress/invariant.sql).
\i tests/pg_regress/invariant.sql
