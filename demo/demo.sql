-- pg_billing demo: the pricing sheet of an AI platform, priced for three customers.
\set ON_ERROR_STOP on
\pset footer off
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS pg_billing CASCADE;
CREATE EXTENSION pg_billing;

\echo
\echo '== The pricing sheet: $99/month platform fee, tokens in graduated tiers, image packs, payments at 2.9 % + 0.30'
CREATE TEMP TABLE pricing_sheet (charge text PRIMARY KEY, price billing.price NOT NULL);
INSERT INTO pricing_sheet VALUES
  ('platform fee', '{"charge_model":"standard","properties":{"amount":"99"}}'),
  ('tokens', '{"charge_model":"graduated","properties":{"graduated_ranges":[
      {"from_value":0,"to_value":1000000,"per_unit_amount":"0.002","flat_amount":"0"},
      {"from_value":1000001,"to_value":10000000,"per_unit_amount":"0.0015","flat_amount":"0"},
      {"from_value":10000001,"to_value":null,"per_unit_amount":"0.001","flat_amount":"0"}]}}'),
  ('image packs', '{"charge_model":"package","properties":{"amount":"10","package_size":100,"free_units":20}}'),
  ('payments', '{"charge_model":"percentage","properties":{"rate":"2.9","fixed_amount":"0.30"}}');
SELECT charge, price::jsonb -> 'charge_model' AS model, price::jsonb -> 'properties' AS properties
FROM pricing_sheet ORDER BY charge;

\echo '== A month of usage for three customers'
CREATE TEMP TABLE usage (customer text, charge text, event_values numeric[]);
INSERT INTO usage VALUES
  ('starter-labs', 'platform fee', ARRAY[1]),
  ('starter-labs', 'tokens', ARRAY[120000, 80000]),
  ('starter-labs', 'image packs', ARRAY[15]),
  ('starter-labs', 'payments', ARRAY[25.00, 40.00]),
  ('growth-ai', 'platform fee', ARRAY[1]),
  ('growth-ai', 'tokens', ARRAY[900000, 1100000, 500000]),
  ('growth-ai', 'image packs', ARRAY[200, 140]),
  ('growth-ai', 'payments', ARRAY[120.00, 80.00, 310.50, 99.99]),
  ('scale-corp', 'platform fee', ARRAY[1]),
  ('scale-corp', 'tokens', ARRAY[9000000, 16000000]),
  ('scale-corp', 'image packs', ARRAY[2500]),
  ('scale-corp', 'payments', ARRAY[1500.00, 2200.00, 980.25]);

SELECT customer,
       sum(units) FILTER (WHERE charge = 'tokens') AS tokens,
       billing.round_money(sum(amount) FILTER (WHERE charge = 'platform fee'), 'USD') AS platform,
       billing.round_money(sum(amount) FILTER (WHERE charge = 'tokens'), 'USD') AS tokens_usd,
       billing.round_money(sum(amount) FILTER (WHERE charge = 'image packs'), 'USD') AS images_usd,
       billing.round_money(sum(amount) FILTER (WHERE charge = 'payments'), 'USD') AS payments_usd,
       sum(billing.round_money(amount, 'USD')) AS total_usd
FROM (SELECT u.customer, u.charge, (SELECT sum(v) FROM unnest(u.event_values) v) AS units,
             billing.amount(p.price, u.event_values) AS amount
      FROM usage u JOIN pricing_sheet p USING (charge)) priced
GROUP BY customer ORDER BY total_usd;

\echo '== Token tiers behind growth-ai''s bill (billing.amount_details)'
SELECT t.from_value, t.to_value, t.units, t.per_unit_amount, t.per_unit_total_amount AS amount
FROM usage u JOIN pricing_sheet p USING (charge),
     jsonb_to_recordset(billing.amount_details(p.price, u.event_values) -> 'graduated_ranges')
       AS t(from_value numeric, to_value numeric, units numeric, per_unit_amount numeric, per_unit_total_amount numeric)
WHERE u.customer = 'growth-ai' AND u.charge = 'tokens' ORDER BY t.from_value;

\echo '== Payments charge behind scale-corp''s bill'
SELECT d ->> 'events' AS events, d ->> 'units' AS volume, d ->> 'per_unit_total_amount' AS percent_part,
       d ->> 'fixed_fee_total_amount' AS fixed_part, d ->> 'amount' AS amount
FROM usage u JOIN pricing_sheet p USING (charge), billing.amount_details(p.price, u.event_values) d
WHERE u.customer = 'scale-corp' AND u.charge = 'payments';

\echo '== The same figures with one aggregate: billing.priced_sum(value, price) ... GROUP BY'
SELECT u.customer, billing.round_money(billing.priced_sum(v, p.price), 'USD') AS tokens_usd
FROM usage u JOIN pricing_sheet p USING (charge), unnest(u.event_values) v
WHERE u.charge = 'tokens' GROUP BY u.customer ORDER BY tokens_usd;

\echo
\echo '== Metering: a customer on the same sheet as a plan, and a burst of real-time usage'
SELECT external_id, currency, timezone FROM billing.create_customer('growth-ai', 'Growth AI Inc.', 'USD', 'America/New_York', 'billing@growth.ai');
SELECT code, aggregation, field_name FROM (
  SELECT * FROM billing.create_billable_metric('tokens', 'LLM tokens', 'sum', 'tokens', filters => '{"model": ["small", "large"]}')
  UNION ALL SELECT * FROM billing.create_billable_metric('images', 'Generated images', 'count')
  UNION ALL SELECT * FROM billing.create_billable_metric('payments', 'Payments processed', 'sum', 'amount')
  UNION ALL SELECT * FROM billing.create_billable_metric('seats', 'Active seats', 'unique_count', 'user_id', recurring => true)
) m;
SELECT version, interval, amount, currency FROM billing.create_plan('ai-pro', 'AI Pro', 'monthly', 99, 'USD', '[
  {"billable_metric_code": "tokens", "charge_model": "graduated", "properties": {"graduated_ranges": [
      {"from_value": 0, "to_value": 1000000, "per_unit_amount": "0.002", "flat_amount": "0"},
      {"from_value": 1000001, "to_value": null, "per_unit_amount": "0.0015", "flat_amount": "0"}]},
   "filters": [{"values": {"model": ["large"]}, "properties": {"graduated_ranges": [
      {"from_value": 0, "to_value": null, "per_unit_amount": "0.006", "flat_amount": "0"}]}}]},
  {"billable_metric_code": "images", "charge_model": "package", "properties": {"amount": "10", "package_size": 100, "free_units": 20}},
  {"billable_metric_code": "payments", "charge_model": "percentage", "properties": {"rate": "2.9", "fixed_amount": "0.30"}},
  {"billable_metric_code": "seats", "charge_model": "standard", "properties": {"amount": "15"}}]');
-- The subscription starts at the beginning of this month in the customer's time zone.
SELECT date_trunc('month', now() AT TIME ZONE 'America/New_York') AT TIME ZONE 'America/New_York' AS month_start \gset
SELECT external_id, status FROM billing.create_subscription('growth-ai-main', 'growth-ai', 'ai-pro', :'month_start');

\echo '== A burst of 5,000 events, 300 replays (200 exact, 100 with a changed payload) and 20 bad ones'
CREATE TEMP TABLE burst AS
SELECT jsonb_build_object(
         'external_subscription_id', 'growth-ai-main',
         'code', (ARRAY['tokens', 'tokens', 'tokens', 'images', 'payments', 'seats'])[n % 6 + 1],
         'transaction_id', 'evt-' || n,
         'timestamp', to_char((:'month_start'::timestamptz + (now() - :'month_start'::timestamptz) * (n / 5000.0)) AT TIME ZONE 'UTC',
                              'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
         'properties', CASE n % 6
             WHEN 3 THEN '{}'::jsonb
             WHEN 4 THEN jsonb_build_object('amount', round(20 + (n % 97) * 3.17, 2))
             WHEN 5 THEN jsonb_build_object('user_id', 'user-' || (n % 23))
             ELSE jsonb_build_object('tokens', 200 + (n * 37) % 1800, 'model', CASE WHEN n % 5 = 0 THEN 'large' ELSE 'small' END)
           END) AS event, n
FROM generate_series(1, 5000) n;
INSERT INTO burst SELECT event, n + 10000 FROM burst WHERE n % 25 = 0;
INSERT INTO burst SELECT jsonb_set(event, '{properties,tokens}', '1'), n + 20000 FROM burst WHERE n % 10 = 7 AND event ->> 'code' = 'tokens' LIMIT 100;
INSERT INTO burst SELECT jsonb_build_object('external_subscription_id', 'growth-ai-main', 'code', c, 'transaction_id', 'bad-' || i || '-' || k,
                                            'timestamp', t, 'properties', p::jsonb), 30000 + 10 * i + k
FROM (VALUES (1, 'tokens', '2030-01-01T00:00:00Z', '{"tokens": 5}'), (2, 'tokens', NULL, '{"tokens": "a lot"}'),
             (3, 'video', NULL, '{}'), (4, 'payments', NULL, '{"amount": "NaN"}'), (5, 'tokens', NULL, '{"model": "small"}')) bad(i, c, t, p),
     generate_series(0, 3) k;
SELECT status, count(*) AS events, min(reason) AS example_reason
FROM billing.ingest_events((SELECT jsonb_agg(event ORDER BY n) FROM burst)) GROUP BY status ORDER BY status;

\echo '== A bulk load with COPY: 20,000 token events written by a batch job, 834 of them resent from the burst'
-- The job writes a tab-separated file; COPY into billing.event_intake validates, deduplicates
-- and stores it while it is read.
CREATE TEMP TABLE job_file AS
SELECT event ->> 'external_subscription_id' AS subscription, event ->> 'code' AS code,
       event ->> 'transaction_id' AS transaction_id, event ->> 'timestamp' AS at, event -> 'properties' AS properties
FROM burst WHERE n <= 5000 AND n % 6 = 1
UNION ALL
SELECT 'growth-ai-main', 'tokens', 'job-' || n,
       to_char((:'month_start'::timestamptz + (now() - :'month_start'::timestamptz) * ((n % 1000) / 1000.0)) AT TIME ZONE 'UTC',
               'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
       jsonb_build_object('tokens', 100 + n % 900, 'model', 'small')
FROM generate_series(1, 20000 - 834) n;
\copy job_file TO '/tmp/pg_billing_demo_events.tsv'
\copy billing.event_intake (external_subscription_id, code, transaction_id, "timestamp", properties) FROM '/tmp/pg_billing_demo_events.tsv'
SELECT * FROM billing.last_intake();

\echo '== Current usage of growth-ai-main (from the day rollups kept at ingestion)'
SELECT billable_metric_code AS metric, charge_model, coalesce(filter_values::text, 'default') AS filter, units, events_count,
       billing.round_money(amount, currency) AS amount_usd
FROM billing.current_usage('growth-ai-main') ORDER BY charge_id, filter_id NULLS FIRST;

\echo '== Rejected events are kept with their reason, nothing is lost'
SELECT sqlstate, reason, count(*) AS events FROM billing.rejected_events GROUP BY sqlstate, reason ORDER BY sqlstate, reason;

\echo '== Usage recorded inside the caller''s transaction rolls back with it'
BEGIN;
SELECT billing.ingest_event('growth-ai-main', 'images', 'txn-in-rolled-back-order', now()) AS outcome;
ROLLBACK;
SELECT count(*) AS stored FROM billing.events WHERE transaction_id = 'txn-in-rolled-back-order';

\echo '== Paid as it happens: a studio buys image generations billed as each is ingested (a charge paid in advance)'
-- Graduated: the first 100 images at 0.04 plus a 5.00 setup fee with the first one, then 0.02.
SELECT version FROM billing.create_plan('ai-images', 'AI Images', 'monthly', 0, 'USD', '[
  {"billable_metric_code": "images", "charge_model": "graduated", "pay_in_advance": true, "properties": {"graduated_ranges": [
      {"from_value": 0, "to_value": 100, "per_unit_amount": "0.04", "flat_amount": "5"},
      {"from_value": 101, "to_value": null, "per_unit_amount": "0.02", "flat_amount": "0"}]}}]');
SELECT external_id FROM billing.create_customer('pixel-studio', 'Pixel Studio', 'USD', 'America/New_York');
SELECT status FROM billing.create_subscription('pixel-studio-main', 'pixel-studio', 'ai-images', :'month_start');
-- One image: 0.04 + 5.00; 149 more: 99 x 0.04 + 50 x 0.02 = 4.96; 150 images, 10.00 in all.
SELECT billing.ingest_event('pixel-studio-main', 'images', 'img-1', now()) AS first_image;
SELECT count(*) AS more_images FROM billing.ingest_events((SELECT jsonb_agg(jsonb_build_object(
  'external_subscription_id', 'pixel-studio-main', 'code', 'images', 'transaction_id', 'img-' || n)) FROM generate_series(2, 150) n));
SELECT i.invoice_type, i.status, f.units, f.events_count, f.amount
FROM billing.invoices i JOIN billing.fees f ON f.customer_id = i.customer_id AND f.invoice_id = i.id
JOIN billing.customers c ON c.id = i.customer_id WHERE c.external_id = 'pixel-studio';

\echo '== Prepaid credits: Prompt Labs buys 50,000 credits (1 credit = $0.001), burned down as its tokens are ingested'
SELECT external_id FROM billing.create_customer('prompt-labs', 'Prompt Labs', 'USD', 'America/New_York');
SELECT status FROM billing.create_subscription('prompt-labs-main', 'prompt-labs', 'ai-pro', :'month_start');
SELECT external_id, rate_amount, credits_balance, burn_down
FROM billing.create_wallet('prompt-labs', 'bundle', 0.001, 'Token bundle', burn_down => true, paid_credits => 50000);
-- At 10,000 credits or less (the ongoing balance), buy what brings it back to 50,000.
SELECT trigger, method, threshold_credits, target_ongoing_balance
FROM billing.add_top_up_rule('prompt-labs/bundle', 'threshold', 'target', threshold_credits => 10000, target_ongoing_balance => 50000);
-- 30 requests of 1,000 small-model tokens at 0.002: 2.00 (2,000 credits) each, taken as each
-- is ingested. The 20th leaves 10,000 credits: the rule buys 40,000; 30,000 are left.
SELECT count(*) AS requests FROM (SELECT billing.ingest_event('prompt-labs-main', 'tokens', 'pl-' || n, now(),
                                                              '{"tokens": 1000, "model": "small"}') FROM generate_series(1, 30) n) r;
SELECT transaction_status, source, status, credits, amount FROM billing_bi.wallet_transactions
WHERE wallet_external_id = 'prompt-labs/bundle' ORDER BY transaction_id;
SELECT credits_balance, balance_amount FROM billing.wallet_balance('prompt-labs/bundle');
-- An application selling by the request checks first (billing.authorize raises 23514 beyond
-- the balance), then records the usage.
SELECT billing.authorize('prompt-labs-main', 'tokens', 1000) AS price_of_1000_more_tokens;

\echo
\echo '== The billing cycle: the month closes and the procedure pg_cron runs (billing.schedule()) bills it'
-- Give the issuer a 2-day grace period, so the invoice stays a draft that late events can
-- still reach, then bill as of the first minutes of next month in New York.
UPDATE billing.billing_entities SET grace_period_days = 2, net_payment_term_days = 30, invoice_prefix = 'GAI' WHERE code = 'default';
-- New York sales tax on growth-ai's invoices (each tax rounded once per invoice).
SELECT code, name, rate FROM billing.create_tax('ny_sales', 'NY sales tax', 8.875);
SELECT billing.set_taxes('customer', 'growth-ai', '{ny_sales}') AS growth_ai_taxes;
SELECT (:'month_start'::timestamptz + interval '1 month' + interval '5 minutes') AS billing_time \gset
CALL billing.run_billing(:'billing_time');
SELECT invoice_id, status, number, issuing_date, fees_amount, taxes_amount, total_amount FROM billing_bi.invoices
WHERE subscription_external_id = 'growth-ai-main';
SELECT invoice_id AS draft FROM billing_bi.draft_invoices WHERE subscription_external_id = 'growth-ai-main' \gset

\echo '== Finalized (numbered, immutable): its lines, as billing.invoice_document renders them'
SELECT status, number, due_date FROM billing.finalize_invoice(:draft);
SELECT line ->> 'description' AS line, coalesce(line ->> 'filter', '') AS filter, line ->> 'units' AS units,
       line ->> 'amount' AS amount
FROM jsonb_array_elements(billing.invoice_document(:draft) -> 'lines') line;
SELECT tax ->> 'name' AS tax, tax ->> 'rate' AS rate, tax ->> 'base_amount' AS base, tax ->> 'amount' AS amount
FROM jsonb_array_elements(billing.invoice_document(:draft) -> 'taxes') tax;
SELECT billing.invoice_document(:draft) -> 'totals' ->> 'total_amount' AS total_due,
       billing.invoice_document(:draft) ->> 'due_date' AS due_date;

\echo '== Checked against the raw events (billing.verify_invoice): every usage line as billed, totals consistent'
SELECT r -> 'lines_checked' AS lines_checked, jsonb_array_length(r -> 'drifting_lines') AS drifting_lines,
       r -> 'totals_consistent' AS totals_consistent
FROM billing.verify_invoice(:draft) r;

\echo '== A goodwill credit note of 500.00 on the tokens line (tax credited in proportion), kept as credit'
SELECT number, sub_total_excluding_taxes, taxes_amount, total_amount, credit_status
FROM billing.create_credit_note(:draft, (SELECT jsonb_build_array(jsonb_build_object('fee_id', f.id, 'amount', '500.00'))
                                         FROM billing.fees f WHERE f.invoice_id = :draft AND f.billable_metric_code = 'tokens'
                                         ORDER BY f.amount DESC LIMIT 1), 'product_unsatisfactory', description => 'latency incident');

\echo '== Next month, previewed with the usage so far (billing.preview_invoice writes nothing): the credit comes off'
SELECT p #>> '{totals,fees_amount}' AS fees, p #>> '{totals,taxes_amount}' AS taxes,
       p #>> '{totals,credit_notes_amount}' AS credit, p #>> '{totals,total_amount}' AS total_due
FROM billing.preview_invoice('growth-ai-main', :'billing_time'::timestamptz + interval '1 day') p;

\echo '== growth-ai moves up to AI Scale on the 10th of next month: an upgrade, pending until then'
-- On that day AI Pro is billed through the 9th and AI Scale from the 10th, on one invoice.
SELECT version, amount FROM billing.create_plan('ai-scale', 'AI Scale', 'monthly', 499, 'USD', '[
  {"billable_metric_code": "tokens", "charge_model": "standard", "properties": {"amount": "0.001"}}]');
SELECT kind, effective_at FROM billing.change_plan('growth-ai-main', 'ai-scale', :'billing_time'::timestamptz + interval '9 days');
SELECT subscription_external_id, kind, from_plan_code, to_plan_code, status FROM billing_bi.plan_changes;

\echo '== Prompt Labs'' month: 99.00 platform fee + 60.00 of tokens. The tokens were burned down; the fee on the draft took the'
\echo '   ongoing balance to 0, so the billing run''s top-up rule bought 50,000 credits; the wallet pays 80.00 of the fee'
SELECT invoice_id AS prompt_draft FROM billing_bi.draft_invoices WHERE subscription_external_id = 'prompt-labs-main' \gset
SELECT number, fees_amount, prepaid_credit_amount, total_amount FROM billing.finalize_invoice(:prompt_draft);
SELECT transaction_status, source, credits, amount, coalesce(invoice_number, '') AS invoice FROM billing_bi.wallet_transactions
WHERE wallet_external_id = 'prompt-labs/bundle' AND transaction_status <> 'consumed' ORDER BY transaction_id;
SELECT invoice_type, number, total_amount, payment_status FROM billing_bi.invoices WHERE customer_external_id = 'prompt-labs' ORDER BY invoice_id;
SELECT count(*) AS wallets_out_of_step FROM billing.wallet_discrepancies();

\echo '== What the application is told (billing.outbox, announced with pg_notify)'
SELECT type, count(*) AS events FROM billing.outbox GROUP BY type ORDER BY type;

\echo '== Revenue, as a BI tool logged in with billing_reader sees it'
SELECT month, currency, invoices, fees_amount, taxes_amount, total_amount FROM billing_bi.revenue_by_month;
SELECT plan_code, currency, active_subscriptions, mrr FROM billing_bi.mrr;
