-- Real-time burn-down and spend enforced at ingestion, worked out by hand in the comments:
-- each event's price rise (the high-water marks of charges paid in advance) taken from the
-- wallet as the event is stored, one ledger row per wallet and day; the period's invoice
-- counting it as paid and giving back what was burned beyond what it bills; caps and
-- balances that make ingestion refuse events (23514). Usage at this month's first instant
-- (the open period), a late event in last month.
SET client_min_messages = warning;
DROP EXTENSION pg_billing CASCADE;
CREATE EXTENSION pg_billing;
SET TIME ZONE 'UTC';
SET datestyle = 'ISO, YMD';
\set SHOW_CONTEXT never

SELECT code FROM billing.create_billable_metric('tokens', 'Tokens', 'sum', 'tokens');
SELECT code FROM billing.create_billable_metric('images', 'Images', 'count');
-- No base fee; tokens at 0.002, images at 0.50, in arrears.
SELECT version FROM billing.create_plan('ai', 'AI', 'monthly', 0, 'EUR', '[
  {"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "0.002"}},
  {"billable_metric_code": "images", "charge_model": "standard", "properties": {"amount": "0.50"}}]');
SELECT external_id FROM billing.create_customer('delta', 'Delta', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('delta-s', 'delta', 'ai', date_trunc('month', now()) - interval '1 month');
CALL billing.run_billing();
SELECT count(*) AS last_month_invoices FROM billing.invoices WHERE status = 'finalized';
CREATE TEMP VIEW ledger AS
SELECT wallet_external_id AS wallet, transaction_status AS kind, credits, amount, reason FROM billing_bi.wallet_transactions;
CREATE TEMP VIEW balance AS SELECT wallet_external_id AS wallet, credits_balance FROM billing_bi.wallets;

-- A burn-down wallet of 10,000 credits at 0.01 (100.00): its customer's subscriptions are
-- priced as they are stored.
SELECT external_id, burn_down FROM billing.create_wallet('delta', 'live', 0.01, burn_down => true, granted_credits => 10000);
SELECT subscription_id IS NOT NULL AS listed, realtime FROM billing.subscription_directory WHERE external_id = 'delta-s';
-- 1,000 tokens: 2.00, 200 credits; then 500 tokens (1.00) and 3 images (1.50): one consumed
-- row for the day, 450 credits, 4.50; 9,550 left.
SELECT billing.ingest_event('delta-s', 'tokens', 't-1', date_trunc('month', now()), '{"tokens": 1000}');
SELECT * FROM ledger WHERE kind = 'consumed';
SELECT count(*) FROM billing.ingest_events((SELECT jsonb_agg(e) FROM (
  SELECT jsonb_build_object('external_subscription_id', 'delta-s', 'code', 'tokens', 'transaction_id', 't-2',
                            'timestamp', date_trunc('month', now()), 'properties', jsonb_build_object('tokens', 500)) AS e
  UNION ALL
  SELECT jsonb_build_object('external_subscription_id', 'delta-s', 'code', 'images', 'transaction_id', 'i-' || n,
                            'timestamp', date_trunc('month', now())) FROM generate_series(1, 3) n) x));
SELECT * FROM ledger WHERE kind = 'consumed';
SELECT * FROM balance;
-- A decrease (-300 tokens, the mark stays at 1,500) burns nothing; a replay burns nothing; a
-- rolled-back event leaves nothing; a late event of last month (closed) is not burned.
SELECT billing.ingest_event('delta-s', 'tokens', 't-3', date_trunc('month', now()), '{"tokens": -300}');
SELECT billing.ingest_event('delta-s', 'tokens', 't-1', date_trunc('month', now()), '{"tokens": 1000}');
BEGIN;
SELECT billing.ingest_event('delta-s', 'tokens', 't-4', date_trunc('month', now()), '{"tokens": 5000}');
SELECT * FROM balance;
ROLLBACK;
SELECT billing.ingest_event('delta-s', 'tokens', 't-late', date_trunc('month', now()) - interval '3 days', '{"tokens": 500}');
SELECT * FROM balance;
-- What was burned is paid: the ongoing usage is what burn-down has not taken (tokens 1,200
-- cost 2.40, 3.00 was burned; images 1.50, 1.50 burned): nothing; 95.50 ongoing.
SELECT credits_balance, balance_amount, ongoing_usage_amount, ongoing_balance_amount FROM billing.wallet_balance('delta/live');
-- The period's invoice (billed as of next month): tokens 2.40, images 1.50, the late tokens
-- as an adjustment 1.00: 4.90. Burn-down paid 2.40 of the 3.00 it took for tokens (0.60, 60
-- credits, restored) and the images' 1.50; the wallet pays the adjustment, 1.00 (100 credits):
-- 4.90 prepaid, 0.00 due; 9,550 + 60 - 100 = 9,510.
SELECT invoice_type, status, fees_amount, prepaid_credit_amount, total_amount
FROM billing.bill_subscription('delta-s', date_trunc('month', now()) + interval '1 month 5 minutes') ORDER BY billing_at;
SELECT kind, credits, amount, reason FROM ledger WHERE kind IN ('restored', 'invoiced') ORDER BY kind;
SELECT * FROM balance;

-- Spend enforced at ingestion, with a burn-down wallet of 300 credits (3.00) and a 5.00 cap:
-- 1,000 tokens (2.00) pass; 1,000 more would need 2.00 of the 1.00 left: refused, nothing
-- stored nor burned.
SELECT external_id FROM billing.create_customer('echo', 'Echo', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('echo-s', 'echo', 'ai', date_trunc('month', now()));
SELECT external_id FROM billing.create_wallet('echo', 'live', 0.01, burn_down => true, granted_credits => 300);
SELECT amount, enforce_on_ingestion FROM billing.set_spend_cap('echo-s', 5, enforce_on_ingestion => true);
SELECT billing.ingest_event('echo-s', 'tokens', 'e-1', date_trunc('month', now()), '{"tokens": 1000}');
SELECT billing.ingest_event('echo-s', 'tokens', 'e-2', date_trunc('month', now()), '{"tokens": 1000}');
SELECT count(*) AS stored FROM billing.events e JOIN billing.subscriptions s ON s.customer_id = e.customer_id AND s.id = e.subscription_id
WHERE s.external_id = 'echo-s';
SELECT * FROM balance WHERE wallet = 'echo/live';
-- Topped up (1,000 granted), it passes (3.00 left + 10.00 = 1,100 credits, 900 after); 1,000
-- more would take the period to 6.00, above the cap: refused, and a batch holding such an
-- event is refused whole.
SELECT transaction_status FROM billing.top_up('echo/live', 0, 1000);
SELECT billing.ingest_event('echo-s', 'tokens', 'e-2', date_trunc('month', now()), '{"tokens": 1000}');
SELECT billing.ingest_event('echo-s', 'tokens', 'e-3', date_trunc('month', now()), '{"tokens": 1000}');
SELECT count(*) FROM billing.ingest_events(jsonb_build_array(
  jsonb_build_object('external_subscription_id', 'echo-s', 'code', 'images', 'transaction_id', 'e-4', 'timestamp', date_trunc('month', now())),
  jsonb_build_object('external_subscription_id', 'echo-s', 'code', 'tokens', 'transaction_id', 'e-5', 'timestamp', date_trunc('month', now()),
                     'properties', jsonb_build_object('tokens', 1000))));
SELECT count(*) AS stored FROM billing.events e JOIN billing.subscriptions s ON s.customer_id = e.customer_id AND s.id = e.subscription_id
WHERE s.external_id = 'echo-s';
SELECT * FROM balance WHERE wallet = 'echo/live';
-- The writer role ingests with burn-down and the cap without any right on the wallets: an
-- image (0.50, 50 credits) takes the period to 4.50.
SET ROLE billing_writer;
SELECT billing.ingest_event('echo-s', 'images', 'w-1', date_trunc('month', now()));
RESET ROLE;
SELECT * FROM balance WHERE wallet = 'echo/live';

-- The prepaid balance enforced without burn-down (no cap): a wallet of 3.00 covers 2.00 of
-- usage not yet invoiced, not 4.00.
SELECT external_id FROM billing.create_customer('fox', 'Fox', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('fox-s', 'fox', 'ai', date_trunc('month', now()));
SELECT external_id FROM billing.create_wallet('fox', 'main', granted_credits => 3);
SELECT amount, enforce_on_ingestion FROM billing.set_spend_cap('fox-s', NULL, enforce_on_ingestion => true);
SELECT billing.ingest_event('fox-s', 'tokens', 'f-1', date_trunc('month', now()), '{"tokens": 1000}');
SELECT billing.ingest_event('fox-s', 'tokens', 'f-2', date_trunc('month', now()), '{"tokens": 1000}');
-- Terminating the burn-down wallet ends real-time pricing of the customer's events.
SELECT status FROM billing.terminate_wallet('delta/live');
SELECT realtime FROM billing.subscription_directory WHERE external_id = 'delta-s';

-- A burn-down wallet limited to tokens pays the tokens it burned (5,000 tokens: 10.00), not
-- the plan's 10.00 base fee: 20.00 billed, 10.00 prepaid, 10.00 due.
SELECT version FROM billing.create_plan('ai-base', 'AI with a base fee', 'monthly', 10, 'EUR', '[
  {"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "0.002"}}]');
SELECT external_id FROM billing.create_customer('golf', 'Golf', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('golf-s', 'golf', 'ai-base', date_trunc('month', now()));
SELECT external_id FROM billing.create_wallet('golf', 'tokens', 0.01, burn_down => true, granted_credits => 100000,
                                              applies_to => '{"billable_metric_codes": ["tokens"]}');
SELECT billing.ingest_event('golf-s', 'tokens', 'g-1', date_trunc('month', now()), '{"tokens": 5000}');
SELECT fees_amount, prepaid_credit_amount, total_amount
FROM billing.bill_subscription('golf-s', date_trunc('month', now()) + interval '1 month 5 minutes');
SELECT * FROM balance WHERE wallet = 'golf/tokens';
-- A rate with endless decimals (0.003): a token (0.002) takes 0.6666...67 credits, rounded
-- up at the 25th decimal so they are worth at least the price; enforced, nothing is short.
SELECT external_id FROM billing.create_customer('hotel', 'Hotel', 'EUR', 'UTC');
SELECT status FROM billing.create_subscription('hotel-s', 'hotel', 'ai', date_trunc('month', now()));
SELECT external_id FROM billing.create_wallet('hotel', 'live', 0.003, burn_down => true, granted_credits => 100000);
SELECT enforce_on_ingestion FROM billing.set_spend_cap('hotel-s', NULL, enforce_on_ingestion => true);
SELECT billing.ingest_event('hotel-s', 'tokens', 'h-1', date_trunc('month', now()), '{"tokens": 1}');
SELECT credits, amount FROM billing.burned_usage b JOIN billing.subscriptions s ON s.customer_id = b.customer_id AND s.id = b.subscription_id
WHERE s.external_id = 'hotel-s';
-- authorize compares exact amounts: 2.00 spent of a 2.00 cap, 4 more tokens (0.008) would
-- bill 2.01: refused, though their price rounds to 0.01.
SELECT amount FROM billing.set_spend_cap('hotel-s', 2, enforce_on_ingestion => false);
SELECT billing.ingest_event('hotel-s', 'tokens', 'h-2', date_trunc('month', now()), '{"tokens": 999}');
SELECT billing.authorize('hotel-s', 'tokens', 4);

-- The invariants of every finalized invoice and every wallet (tests/pg_regress/invariant.sql).
\i tests/pg_regress/invariant.sql
