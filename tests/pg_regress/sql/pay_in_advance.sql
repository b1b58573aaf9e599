-- Charges paid in advance, worked out by hand in the comments: each event billed at
-- ingestion as price(high-water mark after) - price(before), the first tier's flat fee with
-- the first event, package free units used up first, a decrease never refunded nor billed
-- again; the fees of a day on one pay_in_advance invoice; the period's invoice billing them
-- no more, but counting them toward the minimum commitment; the charges refused in advance.
SET client_min_messages = warning;
DROP EXTENSION pg_billing CASCADE;
CREATE EXTENSION pg_billing;
SET TIME ZONE 'UTC';
SET datestyle = 'ISO, YMD';
\set SHOW_CONTEXT never

SELECT code FROM billing.create_billable_metric('calls', 'API calls', 'count');
SELECT code FROM billing.create_billable_metric('tokens', 'Tokens', 'sum', 'tokens');
SELECT code FROM billing.create_billable_metric('images', 'Images', 'count');
SELECT code FROM billing.create_billable_metric('users', 'Users', 'unique_count', 'user_id');
-- 20.00 a month in arrears with an 80.00 minimum commitment; in advance: calls graduated
-- (0-10 at 1.00 + 5.00 flat, then 0.50), tokens at 0.01, images in packages of 5 at 10.00
-- with 2 free; in arrears: tokens at 0.001.
SELECT version FROM billing.create_plan('api', 'API', 'monthly', 20, 'EUR', '[
  {"billable_metric_code": "calls", "charge_model": "graduated", "pay_in_advance": true, "properties": {"graduated_ranges": [
     {"from_value": 0, "to_value": 10, "per_unit_amount": "1", "flat_amount": "5"},
     {"from_value": 11, "to_value": null, "per_unit_amount": "0.5", "flat_amount": "0"}]}},
  {"billable_metric_code": "tokens", "charge_model": "standard", "pay_in_advance": true, "properties": {"amount": "0.01"}},
  {"billable_metric_code": "images", "charge_model": "package", "pay_in_advance": true,
   "properties": {"amount": "10", "package_size": 5, "free_units": 2}},
  {"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "0.001"}}]', minimum_commitment => 80);
SELECT external_id FROM billing.create_customer('acme', 'Acme', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('s1', 'acme', 'api', '2024-03-01 00:00+00');
CREATE TEMP VIEW lines AS
SELECT f.billable_metric_code AS metric, f.units, f.events_count, f.precise_amount, f.amount
FROM billing.fees f JOIN billing.invoices i ON i.customer_id = f.customer_id AND i.id = f.invoice_id
WHERE i.invoice_type = 'pay_in_advance';
CREATE TEMP VIEW state AS
SELECT m.code AS metric, u.units, u.billed_units, u.events_count, u.billed_amount, u.last_units, u.last_amount
FROM billing.in_advance_usage u JOIN billing.charges c ON c.id = u.charge_id JOIN billing.billable_metrics m ON m.id = c.billable_metric_id;

-- Calls: the first bills price(1) = 1.00 + the 5.00 flat fee = 6.00.
SELECT billing.ingest_event('s1', 'calls', 'c-1', '2024-03-05 10:00+00');
SELECT * FROM lines ORDER BY metric;
-- Nine more: price(10) - price(1) = 15.00 - 6.00 = 9.00; two more: price(12) - price(10) =
-- 2 x 0.50 = 1.00. The line: 12 units, 12 events, 16.00 = price(12).
SELECT count(*) FROM billing.ingest_events((SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 's1', 'code', 'calls',
  'transaction_id', 'c-' || n, 'timestamp', '2024-03-06T10:00:00Z')) FROM generate_series(2, 12) n));
-- Tokens: +1000 bills 10.00; -400 (600) and +300 (900) stay under the high-water mark of
-- 1000 and bill nothing; +500 (1400) bills 400 x 0.01 = 4.00: 14.00 = price(1400).
SELECT billing.ingest_event('s1', 'tokens', 't-1', '2024-03-07 10:00+00', '{"tokens": 1000}'),
       billing.ingest_event('s1', 'tokens', 't-2', '2024-03-08 10:00+00', '{"tokens": -400}'),
       billing.ingest_event('s1', 'tokens', 't-3', '2024-03-09 10:00+00', '{"tokens": 300}'),
       billing.ingest_event('s1', 'tokens', 't-4', '2024-03-10 10:00+00', '{"tokens": 500}');
-- Images one by one: the 2 free first, then a package of 5 at the 3rd (10.00) and the next
-- at the 8th (10.00): 20.00 = price(8).
SELECT count(*) FROM (SELECT billing.ingest_event('s1', 'images', 'i-' || n, '2024-03-11 10:00+00') FROM generate_series(1, 8) n) e;
SELECT * FROM lines ORDER BY metric;
SELECT * FROM state ORDER BY metric;
-- A replay bills nothing again.
SELECT billing.ingest_event('s1', 'calls', 'c-1', '2024-03-05 10:00+00');
-- One draft invoice of the day: 16.00 + 14.00 + 20.00 = 50.00.
SELECT invoice_type, status, fees_amount, total_amount FROM billing.invoices;
-- Rolled back with the caller: the event and its fee.
BEGIN;
SELECT billing.ingest_event('s1', 'calls', 'c-rolled-back', '2024-03-12 10:00+00');
ROLLBACK;
SELECT units, amount FROM lines WHERE metric = 'calls';

-- Finalized (by hand, before the day ends): the next event's fee goes on an invoice of its
-- own: 13 calls, price(13) - price(12) = 0.50.
SELECT status, fees_amount FROM billing.finalize_invoice((SELECT id FROM billing.invoices WHERE invoice_type = 'pay_in_advance'));
SELECT billing.ingest_event('s1', 'calls', 'c-13', '2024-03-12 10:00+00');
-- Later transactions of the day join it: 14 calls, 0.50 more.
SELECT billing.ingest_event('s1', 'calls', 'c-14', '2024-03-12 11:00+00');
SELECT status, fees_amount FROM billing.invoices WHERE invoice_type = 'pay_in_advance' ORDER BY id;

-- The period's invoice bills the base fee and the arrears tokens (1400 x 0.001 = 1.40), not
-- the charges paid in advance; the commitment counts them: 80.00 - (20.00 + 1.40 + 17.00 +
-- 14.00 + 20.00 = 72.40) = 7.60; total 29.00.
SELECT fees_amount, total_amount FROM billing.bill_subscription('s1', '2024-04-01 00:00+00');
SELECT f.fee_type, f.description, f.units, f.amount FROM billing.fees f JOIN billing.invoices i ON i.customer_id = f.customer_id AND i.id = f.invoice_id
WHERE i.invoice_type = 'subscription' ORDER BY f.fee_type, f.description;

-- The ingesting role bills events paid in advance without any right on invoices, and cannot
-- call the billing function itself (42501).
CREATE ROLE regress_in_advance_writer IN ROLE billing_writer;
SET ROLE regress_in_advance_writer;
SELECT billing.ingest_event('s1', 'calls', 'c-15', '2024-03-12 12:00+00');
SELECT billing._bill_in_advance('{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}');
RESET ROLE;
DROP ROLE regress_in_advance_writer;
SELECT events_count, billed_units FROM state WHERE metric = 'calls';

-- The metric's rounding applies to the mark: GB rounded up; two events of 0.4 GB bill
-- price(ceil(0.4)) = 1.00, then price(ceil(0.8)) - price(1) = 0.
SELECT code FROM billing.create_billable_metric('gb', 'Storage', 'sum', 'gb', rounding_function => 'ceil');
SELECT version FROM billing.create_plan('storage', 'Storage', 'monthly', 0, 'EUR',
  '[{"billable_metric_code": "gb", "charge_model": "standard", "pay_in_advance": true, "properties": {"amount": "1"}}]');
SELECT status FROM billing.create_subscription('s-gb', 'acme', 'storage', '2024-03-01 00:00+00');
SELECT billing.ingest_event('s-gb', 'gb', 'g-1', '2024-03-05 10:00+00', '{"gb": 0.4}'),
       billing.ingest_event('s-gb', 'gb', 'g-2', '2024-03-05 11:00+00', '{"gb": 0.4}');
SELECT units, billed_units, billed_amount, last_units, last_amount FROM state WHERE metric = 'gb';

-- A charge paid in advance that is not invoiceable keeps its line and puts nothing on an
-- invoice; usage thresholds leave charges paid in advance alone (8 calls at 1.00 cross a
-- 5.00 threshold but are billed already: no progressive invoice).
SELECT code FROM billing.create_billable_metric('pings', 'Pings', 'count');
SELECT version FROM billing.create_plan('pings', 'Pings', 'monthly', 0, 'EUR', '[
  {"billable_metric_code": "pings", "charge_model": "standard", "pay_in_advance": true, "invoiceable": false, "properties": {"amount": "1"}},
  {"billable_metric_code": "calls", "charge_model": "standard", "pay_in_advance": true, "properties": {"amount": "1"}}]',
  usage_thresholds => '[{"amount": "5"}]');
SELECT external_id FROM billing.create_customer('beta', 'Beta', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('s-pings', 'beta', 'pings', '2024-03-01 00:00+00');
SELECT billing.ingest_event('s-pings', 'pings', 'p-1', '2024-03-05 10:00+00');
SELECT count(*) AS invoices_for_pings FROM billing.invoices i JOIN billing.customers c ON c.id = i.customer_id WHERE c.external_id = 'beta';
SELECT billed_amount FROM state WHERE metric = 'pings';
SELECT count(*) FROM billing.ingest_events((SELECT jsonb_agg(jsonb_build_object('external_subscription_id', 's-pings', 'code', 'calls',
  'transaction_id', 'pc-' || n, 'timestamp', '2024-03-06T10:00:00Z')) FROM generate_series(1, 8) n));
SELECT invoice_type, fees_amount FROM billing.bill_subscription('s-pings', '2024-03-20 00:00+00');
SELECT i.invoice_type, i.fees_amount FROM billing.invoices i JOIN billing.customers c ON c.id = i.customer_id
WHERE c.external_id = 'beta' ORDER BY i.id;

-- A recurring charge paid in advance, prorated: storage at 1.00 a GB and month. March (31
-- days): +10 GB on the 1st bills 10 x 31/31 = 10.00; +5 on the 22nd bills 5 x 10/31 =
-- 1.6129... (1.61); -3 on the 25th bills nothing. April (30 days) starts from the 12 GB
-- carried in: the run bills 12.00 at its start; +1 on the 10th bills 1 x 21/30 = 0.70.
SELECT code FROM billing.create_billable_metric('storage', 'Storage', 'sum', 'gb', recurring => true);
SELECT version FROM billing.create_plan('vault', 'Vault', 'monthly', 0, 'EUR', '[{"billable_metric_code": "storage",
  "charge_model": "standard", "pay_in_advance": true, "prorated": true, "properties": {"amount": "1"}}]');
SELECT external_id FROM billing.create_customer('gamma', 'Gamma', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('s-vault', 'gamma', 'vault', '2024-03-01 00:00+00');
SELECT billing.ingest_event('s-vault', 'storage', 'v-1', '2024-03-01 10:00+00', '{"gb": 10}'),
       billing.ingest_event('s-vault', 'storage', 'v-2', '2024-03-22 10:00+00', '{"gb": 5}'),
       billing.ingest_event('s-vault', 'storage', 'v-3', '2024-03-25 10:00+00', '{"gb": -3}');
SELECT invoice_type, fees_amount FROM billing.bill_subscription('s-vault', '2024-04-01 00:00+00') ORDER BY billing_at;
SELECT billing.ingest_event('s-vault', 'storage', 'v-4', '2024-04-10 10:00+00', '{"gb": 1}');
SELECT i.invoice_type, f.units, f.events_count, f.precise_amount, f.amount, f.from_datetime
FROM billing.fees f JOIN billing.invoices i ON i.customer_id = f.customer_id AND i.id = f.invoice_id
JOIN billing.customers c ON c.id = f.customer_id WHERE c.external_id = 'gamma' ORDER BY i.invoice_type, f.from_datetime;
SELECT u.period_from, u.units, u.billed_units, u.events_count FROM billing.in_advance_usage u
JOIN billing.customers c ON c.id = u.customer_id WHERE c.external_id = 'gamma' ORDER BY u.period_from;

-- Members billed as they are added: users at 10.00 each in advance. u1 and u2 bill 10.00 each;
-- u1 again, u2 removed and added back stay at the high-water mark of 2 and bill nothing; u3
-- bills 10.00: 30.00 = price(3).
SELECT version FROM billing.create_plan('team', 'Team', 'monthly', 0, 'EUR', '[{"billable_metric_code": "users",
  "charge_model": "standard", "pay_in_advance": true, "properties": {"amount": "10"}}]');
SELECT status FROM billing.create_subscription('s-team', 'gamma', 'team', '2024-03-01 00:00+00');
SELECT billing.ingest_event('s-team', 'users', 'u-1', '2024-03-02 10:00+00', '{"user_id": "u1"}'),
       billing.ingest_event('s-team', 'users', 'u-2', '2024-03-03 10:00+00', '{"user_id": "u2"}'),
       billing.ingest_event('s-team', 'users', 'u-3', '2024-03-04 10:00+00', '{"user_id": "u1"}'),
       billing.ingest_event('s-team', 'users', 'u-4', '2024-03-05 10:00+00', '{"user_id": "u2", "operation_type": "remove"}'),
       billing.ingest_event('s-team', 'users', 'u-5', '2024-03-06 10:00+00', '{"user_id": "u2"}'),
       billing.ingest_event('s-team', 'users', 'u-6', '2024-03-07 10:00+00', '{"user_id": "u3"}');
SELECT u.units, u.billed_units, u.events_count, u.billed_amount FROM billing.in_advance_usage u
JOIN billing.subscriptions s ON s.customer_id = u.customer_id AND s.id = u.subscription_id WHERE s.external_id = 's-team';

-- Ends of lines: a percentage total that goes down and up again bills its highest amount
-- once (10 % of 100, then -50 and +50: 10.00, 0, 0); members added and removed in one batch
-- (u1, u2, u2 removed) reach 2 and bill 20.00; after an upgrade within the period, the units
-- carried in are not billed again (the old plan billed the period: 10 GB on March 2, 10 x 30 /
-- 31 = 9.68), and +2 GB on the new plan (2.00 a GB) on the 20th bills 2 x (12 - 10) x 12 / 31
-- = 1.55.
SELECT code FROM billing.create_billable_metric('flows', 'Flows', 'sum', 'amount');
SELECT version FROM billing.create_plan('flows', 'Flows', 'monthly', 0, 'EUR', '[{"billable_metric_code": "flows",
  "charge_model": "percentage", "pay_in_advance": true, "properties": {"rate": "10"}}]');
SELECT status FROM billing.create_subscription('s-flows', 'gamma', 'flows', '2024-03-01 00:00+00');
SELECT billing.ingest_event('s-flows', 'flows', 'f-1', '2024-03-02 10:00+00', '{"amount": 100}'),
       billing.ingest_event('s-flows', 'flows', 'f-2', '2024-03-03 10:00+00', '{"amount": -50}'),
       billing.ingest_event('s-flows', 'flows', 'f-3', '2024-03-04 10:00+00', '{"amount": 50}');
SELECT status FROM billing.create_subscription('s-team2', 'gamma', 'team', '2024-03-01 00:00+00');
SELECT count(*) FROM billing.ingest_events('[
  {"external_subscription_id": "s-team2", "code": "users", "transaction_id": "t2-1", "timestamp": "2024-03-02T10:00:00Z", "properties": {"user_id": "u1"}},
  {"external_subscription_id": "s-team2", "code": "users", "transaction_id": "t2-2", "timestamp": "2024-03-03T10:00:00Z", "properties": {"user_id": "u2"}},
  {"external_subscription_id": "s-team2", "code": "users", "transaction_id": "t2-3", "timestamp": "2024-03-03T11:00:00Z",
   "properties": {"user_id": "u2", "operation_type": "remove"}}]');
SELECT version FROM billing.create_plan('vault-plus', 'Vault plus', 'monthly', 10, 'EUR', '[{"billable_metric_code": "storage",
  "charge_model": "standard", "pay_in_advance": true, "prorated": true, "properties": {"amount": "2"}}]');
SELECT status FROM billing.create_subscription('s-vault2', 'gamma', 'vault', '2024-03-01 00:00+00');
SELECT billing.ingest_event('s-vault2', 'storage', 'v2-1', '2024-03-02 10:00+00', '{"gb": 10}');
SELECT kind FROM billing.change_plan('s-vault2', 'vault-plus', '2024-03-16 00:00+00');
SELECT billing.ingest_event('s-vault2', 'storage', 'v2-2', '2024-03-20 10:00+00', '{"gb": 2}');
SELECT s.external_id, u.units, u.billed_units, u.events_count, u.billed_amount FROM billing.in_advance_usage u
JOIN billing.subscriptions s ON s.customer_id = u.customer_id AND s.id = u.subscription_id
WHERE s.external_id IN ('s-flows', 's-team2', 's-vault2') ORDER BY 1, u.period_from;
SELECT i.invoice_type, f.description, f.amount FROM billing.fees f JOIN billing.invoices i ON i.customer_id = f.customer_id AND i.id = f.invoice_id
JOIN billing.subscriptions s ON s.customer_id = f.customer_id AND s.id = f.subscription_id WHERE s.external_id = 's-vault2'
ORDER BY i.invoice_type, f.from_datetime, f.description;

-- Charges that cannot be paid in advance: 22023, nothing written.
SELECT code FROM billing.create_billable_metric('peak', 'Peak', 'max', 'gb');
SELECT billing.create_plan('bad', 'Bad', 'monthly', charges => '[{"billable_metric_code": "peak", "charge_model": "standard",
  "pay_in_advance": true, "properties": {"amount": "1"}}]');
SELECT billing.create_plan('bad', 'Bad', 'monthly', charges => '[{"billable_metric_code": "storage", "charge_model": "percentage",
  "pay_in_advance": true, "properties": {"rate": "1"}}]');
SELECT count(*) AS bad_plans FROM billing.plans WHERE code = 'bad';

-- Priced per event: payments at 2.9 % + 0.30 with the first event free: 100 bills amount([100])
-- = 0; 50 bills amount([100, 50]) - 0 = (150 - 100) x 2.9 % + 0.30 = 1.75; 200 bills
-- (350 - 100) x 2.9 % + 2 x 0.30 - 1.75 = 7.85 - 1.75 = 6.10. Spend priced by each event's own
-- amount (dynamic): 1234 and 66 cents, 12.34 + 0.66 = 13.00.
SELECT code FROM billing.create_billable_metric('payments', 'Payments', 'sum', 'amount');
SELECT code FROM billing.create_billable_metric('spend', 'Spend', 'sum', 'amount');
SELECT version FROM billing.create_plan('fintech', 'Fintech', 'monthly', 0, 'EUR', '[
  {"billable_metric_code": "payments", "charge_model": "percentage", "pay_in_advance": true,
   "properties": {"rate": "2.9", "fixed_amount": "0.30", "free_units_per_events": 1}},
  {"billable_metric_code": "spend", "charge_model": "dynamic", "pay_in_advance": true, "properties": {}}]');
SELECT status FROM billing.create_subscription('s-fin', 'beta', 'fintech', '2024-03-01 00:00+00');
SELECT billing.ingest_event('s-fin', 'payments', 'pay-1', '2024-03-05 10:00+00', '{"amount": 100}'),
       billing.ingest_event('s-fin', 'payments', 'pay-2', '2024-03-05 11:00+00', '{"amount": 50}'),
       billing.ingest_event('s-fin', 'payments', 'pay-3', '2024-03-05 12:00+00', '{"amount": 200}'),
       billing.ingest_event('s-fin', 'spend', 'sp-1', '2024-03-05 12:00+00', '{"amount": 12.34}', 1234),
       billing.ingest_event('s-fin', 'spend', 'sp-2', '2024-03-05 13:00+00', '{"amount": 0.66}', 66);
SELECT metric, units, events_count, billed_amount, last_amount FROM state WHERE metric IN ('payments', 'spend') ORDER BY metric;
SELECT f.billable_metric_code, f.units, f.events_count, f.amount FROM billing.fees f JOIN billing.subscriptions s
  ON s.customer_id = f.customer_id AND s.id = f.subscription_id WHERE s.external_id = 's-fin' ORDER BY 1;

\i tests/pg_regress/invariant.sql
