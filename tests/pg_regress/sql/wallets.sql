-- Prepaid credits, balances worked out by hand in the comments: purchase and grant, an
-- invoice paid by two wallets by priority (one limited to a metric, tax included), credits
-- in whole cents at rate 0.001, direct deduction (idempotent, never overdrawn), threshold
-- top-ups (fixed and target), an interval top-up, expiry, purchases waiting for payment, a
-- voided invoice giving its credits back, authorize against a spend cap and the balance.
-- Usage falls in last month (invoiced) and at this month's first instant (the open period).
SET client_min_messages = warning;
DROP EXTENSION pg_billing CASCADE;
CREATE EXTENSION pg_billing;
SET TIME ZONE 'UTC';
SET datestyle = 'ISO, YMD';
\set SHOW_CONTEXT never

SELECT code FROM billing.create_billable_metric('tokens', 'Tokens', 'sum', 'tokens');
SELECT code FROM billing.create_billable_metric('images', 'Images', 'count');
-- 20.00 a month in arrears; tokens at 0.002, images at 0.50.
SELECT version FROM billing.create_plan('ai', 'AI', 'monthly', 20, 'EUR', '[
  {"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "0.002"}},
  {"billable_metric_code": "images", "charge_model": "standard", "properties": {"amount": "0.50"}}]');
SELECT code FROM billing.create_tax('vat', 'VAT', 10);
SELECT external_id FROM billing.create_customer('acme', 'Acme', 'EUR', 'UTC');
SELECT billing.set_taxes('customer', 'acme', '{vat}');
SELECT status FROM billing.create_subscription('acme-s', 'acme', 'ai', date_trunc('month', now()) - interval '1 month');
CREATE TEMP VIEW ledger AS
SELECT wallet_external_id AS wallet, transaction_status AS kind, status, source, credits, amount,
       (SELECT i.invoice_type::text FROM billing.invoices i WHERE i.id = t.invoice_id) AS invoice_type, reason
FROM billing_bi.wallet_transactions t;
CREATE TEMP VIEW balances AS
SELECT wallet_external_id AS wallet, status, rate_amount, priority, credits_balance, balance_amount FROM billing_bi.wallets;

-- Purchase and grant: 5,000 paid credits at 0.01 are a 50.00 credit-purchase invoice (no
-- tax), settled at its finalization; 1,000 granted credits settle at once: 6,000 credits,
-- 60.00. The bundle pays tokens only and goes first (priority 1); main (rate 1) pays
-- anything, with 10 granted credits.
SELECT external_id, credits_balance FROM billing.create_wallet('acme', 'bundle', 0.01, 'Token bundle', 1,
  applies_to => '{"billable_metric_codes": ["tokens"]}', paid_credits => 5000, granted_credits => 1000);
SELECT external_id, credits_balance FROM billing.create_wallet('acme', 'main', 1, priority => 2, granted_credits => 10);
SELECT * FROM ledger ORDER BY wallet, kind;
SELECT invoice_type, status, fees_amount, taxes_amount, prepaid_credit_amount, total_amount FROM billing_bi.invoices WHERE invoice_type = 'credit';

-- Last month: 12,000 tokens (24.00), 10 images (5.00), base 20.00: 49.00 + 10 % VAT 4.90 =
-- 53.90. The bundle pays the tokens with their tax, 26.40 (2,640 credits); main pays 10.00
-- of the 27.50 left and is depleted; 17.50 is due.
SELECT billing.ingest_event('acme-s', 'tokens', 't-' || n, date_trunc('month', now()) - interval '10 days', jsonb_build_object('tokens', 3000))
FROM generate_series(1, 4) n;
SELECT count(*) FROM (SELECT billing.ingest_event('acme-s', 'images', 'i-' || n, date_trunc('month', now()) - interval '9 days')
                      FROM generate_series(1, 10) n) e;
CALL billing.run_billing();
SELECT invoice_type, status, fees_amount, taxes_amount, prepaid_credit_amount, total_amount
FROM billing_bi.invoices WHERE invoice_type = 'subscription';
SELECT * FROM ledger WHERE kind = 'invoiced' ORDER BY wallet;
SELECT * FROM balances ORDER BY wallet;
SELECT type, payload ->> 'external_id' AS wallet FROM billing.outbox WHERE type = 'wallet.depleted';

-- The open period: 1,000 tokens (2.00, before tax) are ongoing usage the bundle would pay:
-- 33.60 - 2.00 = 31.60 ongoing, 3,160 credits.
SELECT billing.ingest_event('acme-s', 'tokens', 't-now', date_trunc('month', now()), '{"tokens": 1000}');
SELECT credits_balance, balance_amount, ongoing_usage_amount, ongoing_balance_amount, credits_ongoing_balance
FROM billing.wallet_balance('acme/bundle');

-- authorize: 10,000 more tokens cost 20.00 (within 31.60); 5 images cost 2.50, which only
-- main may pay, and main is empty: 23514. With a 25.00 cap: 2.00 spent + 20.00 passes;
-- 12,000 tokens (24.00) would reach 26.00: 23514. Nothing is written.
SELECT billing.authorize('acme-s', 'tokens', 10000);
SELECT billing.authorize('acme-s', 'images', 5);
SELECT amount FROM billing.set_spend_cap('acme-s', 25);
SELECT billing.authorize('acme-s', 'tokens', 10000);
SELECT billing.authorize('acme-s', 'tokens', 12000);
SELECT billing.authorize('acme-s', 'tokens', 0);
-- The cap is announced once per period when usage reaches it: 12,500 tokens (25.00) now.
SELECT billing.ingest_event('acme-s', 'tokens', 't-cap', date_trunc('month', now()), '{"tokens": 11500}');
SELECT spend_caps_reached FROM billing.run_wallets();
SELECT spend_caps_reached FROM billing.run_wallets();
SELECT type, payload ->> 'spent_amount' AS spent FROM billing.outbox WHERE type = 'spend_cap.reached';

-- Voiding the invoice gives back what it consumed: 2,640 and 10 credits restored.
SELECT status FROM billing.void_invoice((SELECT invoice_id FROM billing_bi.invoices WHERE invoice_type = 'subscription'));
SELECT * FROM ledger WHERE kind = 'restored' ORDER BY wallet;
SELECT wallet, credits_balance FROM balances ORDER BY wallet;

-- Rounding to whole cents at rate 0.001: 1,034 credits bill 1.03, 1,035 bill 1.04 (half
-- up). A 5.00 invoice takes what 1,034 + 1,035 = 2,069 credits can pay in whole cents:
-- 2.06 (2,060 credits), leaving 9 credits (0.009, shown as 0.01).
SELECT external_id FROM billing.create_customer('beta', 'Beta', 'EUR', 'UTC');
SELECT external_id FROM billing.create_wallet('beta', 'milli', 0.001);
SELECT credits, amount FROM billing.top_up('beta/milli', 1034);
SELECT credits, amount FROM billing.top_up('beta/milli', 1035);
SELECT fees_amount, total_amount FROM billing_bi.invoices WHERE customer_external_id = 'beta' ORDER BY invoice_id;
SELECT total_amount, prepaid_credit_amount FROM billing.create_one_off_invoice('beta', '[{"description": "Setup", "unit_amount": "5"}]');
SELECT credits_balance, balance_amount FROM balances WHERE wallet = 'beta/milli';

-- Direct deduction: 30 credits, a replay returns the same row and deducts nothing, a replay
-- asking for other credits is a conflict, an overdraw names the balance.
SELECT external_id FROM billing.create_customer('gamma', 'Gamma', 'EUR', 'UTC');
SELECT external_id FROM billing.create_wallet('gamma', 'main', granted_credits => 100);
SELECT credits, amount, reason FROM billing.deduct_credits('gamma/main', 30, 'req-1', 'chat completion');
SELECT credits, amount, reason FROM billing.deduct_credits('gamma/main', 30, 'req-1', 'chat completion');
SELECT credits FROM billing.deduct_credits('gamma/main', 31, 'req-1');
SELECT credits FROM billing.deduct_credits('gamma/main', 71, 'req-2');
SELECT wallet, credits_balance FROM balances WHERE wallet = 'gamma/main';
-- A rolled-back deduction leaves nothing.
BEGIN;
SELECT credits FROM billing.deduct_credits('gamma/main', 50, 'req-3');
ROLLBACK;
SELECT count(*) AS deductions FROM ledger WHERE wallet = 'gamma/main' AND kind = 'deducted';

-- Threshold, fixed: at 20 credits or less, buy 50. 70 -> 45 -> 15 fires (15 + 50 = 65);
-- -> 55 re-arms it (above 20) without firing; -> 15 fires again (65).
SELECT trigger, method, armed FROM billing.add_top_up_rule('gamma/main', 'threshold', paid_credits => 50, threshold_credits => 20);
SELECT credits FROM billing.deduct_credits('gamma/main', 25, 'req-4');
SELECT credits FROM billing.deduct_credits('gamma/main', 30, 'req-5');
SELECT wallet, credits_balance FROM balances WHERE wallet = 'gamma/main';
SELECT credits FROM billing.deduct_credits('gamma/main', 10, 'req-6');
SELECT credits FROM billing.deduct_credits('gamma/main', 40, 'req-7');
SELECT wallet, credits_balance FROM balances WHERE wallet = 'gamma/main';
SELECT kind, source, credits, amount, invoice_type FROM ledger WHERE wallet = 'gamma/main' AND kind = 'purchased';

-- Threshold, target: at 10 or less, buy what brings the ongoing balance to 100: 100 -> 5
-- buys 95.
SELECT external_id FROM billing.create_wallet('gamma', 'target', granted_credits => 100);
SELECT method FROM billing.add_top_up_rule('gamma/target', 'threshold', 'target', threshold_credits => 10, target_ongoing_balance => 100);
SELECT credits FROM billing.deduct_credits('gamma/target', 95, 'req-8');
SELECT kind, source, credits FROM ledger WHERE wallet = 'gamma/target' ORDER BY kind;
SELECT wallet, credits_balance FROM balances WHERE wallet = 'gamma/target';

-- Interval: monthly from two months and a day ago, 25 granted; the run fires it once (the
-- instants passed count once), a second run nothing.
SELECT trigger FROM billing.add_top_up_rule('gamma/target', 'interval', granted_credits => 25, "interval" => 'monthly',
                                            started_at => now() - interval '2 months 1 day');
SELECT interval_top_ups FROM billing.run_wallets();
SELECT interval_top_ups FROM billing.run_wallets();
SELECT kind, source, credits FROM ledger WHERE wallet = 'gamma/target' AND source = 'interval';

-- Expiry: what is left goes out as expired and the wallet ends.
SELECT external_id FROM billing.create_wallet('gamma', 'promo', granted_credits => 30, expiration_at => now() + interval '1 hour');
SELECT expired FROM billing.run_wallets(now() + interval '2 hours');
SELECT kind, credits FROM ledger WHERE wallet = 'gamma/promo' ORDER BY kind;
SELECT wallet, status, credits_balance FROM balances WHERE wallet = 'gamma/promo';
SELECT type FROM billing.outbox WHERE type = 'wallet.expired';

-- Purchases that wait for payment: pending (no balance) until paid; a failed payment leaves
-- them pending (a retried payment settles them), a voided invoice fails them.
SELECT external_id FROM billing.create_wallet('gamma', 'strict', invoice_requires_successful_payment => true);
SELECT status, credits FROM billing.top_up('gamma/strict', 40);
SELECT credits_balance FROM balances WHERE wallet = 'gamma/strict';
SELECT payment_status FROM billing.set_payment_status((SELECT max(invoice_id) FROM billing_bi.invoices WHERE customer_external_id = 'gamma'), 'succeeded');
SELECT status, credits FROM billing.top_up('gamma/strict', 15);
SELECT payment_status FROM billing.set_payment_status((SELECT max(invoice_id) FROM billing_bi.invoices WHERE customer_external_id = 'gamma'), 'failed');
SELECT kind, status, credits FROM ledger WHERE wallet = 'gamma/strict' ORDER BY credits;
SELECT status FROM billing.void_invoice((SELECT max(invoice_id) FROM billing_bi.invoices WHERE customer_external_id = 'gamma'));
SELECT kind, status, credits FROM ledger WHERE wallet = 'gamma/strict' ORDER BY credits;
SELECT credits_balance FROM balances WHERE wallet = 'gamma/strict';

-- Bad input: each a specific SQLSTATE, nothing written.
\set VERBOSITY sqlstate
SELECT billing.deduct_credits('nobody/main', 1, 'k');
SELECT billing.deduct_credits('gamma/main', 0, 'k');
SELECT billing.deduct_credits('gamma/main', 1, '');
SELECT billing.deduct_credits('gamma/promo', 1, 'k');
SELECT billing.top_up('gamma/main', -1);
SELECT billing.top_up('gamma/main', 0, 0);
SELECT billing.create_wallet('gamma', 'main');
SELECT billing.create_wallet('gamma', 'limited', applies_to => '{"billable_metric_codes": ["nope"]}');
SELECT billing.create_wallet('gamma', 'limited', applies_to => '{"fee_types": ["tea"]}');
SELECT billing.create_wallet('gamma', 'zero', 0);
SELECT external_id FROM billing.create_wallet('gamma', 'capped', paid_top_up_min_credits => 10, paid_top_up_max_credits => 100);
SELECT billing.top_up('gamma/capped', 5);
SELECT billing.top_up('gamma/capped', 500);
SELECT billing.top_up('beta/milli', 0.4);
SELECT billing.add_top_up_rule('gamma/main', 'threshold', paid_credits => 10);
SELECT billing.add_top_up_rule('gamma/main', 'interval', granted_credits => 10, "interval" => 'daily');
SELECT billing.add_top_up_rule('gamma/main', 'interval', granted_credits => 10, "interval" => 'monthly', started_at => 'infinity');
SELECT billing.create_wallet('gamma', 'empty', applies_to => '{"fee_types": []}');
SELECT billing.deduct_credits('gamma/main', 1, 'pg_billing burn-down 2026-01-01');
SELECT billing.authorize('acme-s', 'nope', 1);
SELECT billing.authorize('acme-s', 'tokens', -1);
SELECT billing.set_spend_cap('acme-s', 1.005);
UPDATE billing.wallets SET credits_balance = 1000000 WHERE external_id = 'gamma/main';
UPDATE billing.wallet_transactions SET credits = 1 WHERE wallet_id = 1;
DELETE FROM billing.wallet_transactions;
\set VERBOSITY default

-- The invariants of every finalized invoice and every wallet (tests/pg_regress/invariant.sql).
\i tests/pg_regress/invariant.sql
