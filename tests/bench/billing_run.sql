-- Billing-run fixture (tests/bench/billing_run): a monthly calendar plan billed in arrears
-- (base fee plus a graduated charge on a sum metric and a standard one on a count metric),
-- :subscriptions customers with one subscription each from :'month_start' (UTC), and
-- :events events spread over the subscriptions and that month.
--   psql -v subscriptions=... -v events=... -v month_start=2026-10-01 -v chunk=...
--        -v base=20 -v tier1_to=... -v tier2_to=... -f tests/bench/billing_run.sql
-- The tier bounds come from the caller, which prices the usage again by hand with them.
SET client_min_messages = warning;
CREATE EXTENSION pg_billing;
SELECT count(*) FROM billing.create_billable_metric('tokens', 'Tokens', 'sum', 'tokens');
SELECT count(*) FROM billing.create_billable_metric('requests', 'Requests', 'count');
-- Integer-style tiers with flat fees on every tier, so that a subscription's price depends
-- on which tiers it reaches; the caller sets the bounds so that the subscriptions spread
-- over all three.
SELECT count(*) FROM billing.create_plan('metered', 'Metered', 'monthly', :base, 'USD', jsonb_build_array(
  jsonb_build_object('billable_metric_code', 'tokens', 'charge_model', 'graduated',
    'properties', jsonb_build_object('graduated_ranges', jsonb_build_array(
      jsonb_build_object('from_value', 0, 'to_value', :tier1_to, 'per_unit_amount', '0.0001', 'flat_amount', '0.5'),
      jsonb_build_object('from_value', :tier1_to + 1, 'to_value', :tier2_to, 'per_unit_amount', '0.00008', 'flat_amount', '1'),
      jsonb_build_object('from_value', :tier2_to + 1, 'to_value', null, 'per_unit_amount', '0.00005', 'flat_amount', '2')))),
  jsonb_build_object('billable_metric_code', 'requests', 'charge_model', 'standard',
    'properties', jsonb_build_object('amount', '0.0015'))));
SELECT count(billing.create_customer('cust-' || c, 'Customer ' || c, 'USD', 'UTC')) FROM generate_series(1, :subscriptions) c;
SELECT count(billing.create_subscription('sub-' || s, 'cust-' || s, 'metered', (:'month_start'::date)::timestamp AT TIME ZONE 'UTC'))
FROM generate_series(1, :subscriptions) s;

-- Events through the COPY path's intake (an INSERT ... SELECT into it is stored exactly as a
-- COPY would be, day rollups included, without writing a file first), :chunk events a
-- statement so that no one transaction holds the whole load.
-- Event k goes to subscription (k - 1) % :subscriptions + 1, so each subscription gets
-- every :subscriptions-th event, and its round (k - 1) / :subscriptions picks the metric:
-- three rounds of tokens, then one of requests. Timestamps grow with k and span the month
-- to its last second, so every subscription has events on every day. A sum's value is a
-- hashed 0.01-100.00 times the subscription's weight (1, 2 or 3), so sums are decimals and
-- the subscriptions' totals fall into different tiers.
SELECT format($load$
INSERT INTO billing.event_intake (external_subscription_id, code, transaction_id, "timestamp", properties)
SELECT 'sub-' || s, CASE WHEN round %% 4 = 3 THEN 'requests' ELSE 'tokens' END, 'ev-' || k,
       (%1$s + (k - 1) * %2$s / %3$s)::text,
       CASE WHEN round %% 4 = 3 THEN '{}'::jsonb
            ELSE jsonb_build_object('tokens', (s %% 3 + 1) * (1 + (k * 2654435761) %% 4294967296 %% 10000) / 100.0) END
FROM generate_series(%4$s::bigint, %5$s) k,
     LATERAL (SELECT (k - 1) %% %6$s + 1 AS s, (k - 1) / %6$s AS round) p
$load$, extract(epoch FROM (:'month_start'::date)::timestamp AT TIME ZONE 'UTC')::bigint,
        extract(epoch FROM ((:'month_start'::date + interval '1 month')::timestamp AT TIME ZONE 'UTC')
                         - ((:'month_start'::date)::timestamp AT TIME ZONE 'UTC'))::bigint,
        :events, lo, least(lo + :chunk - 1, :events), :subscriptions)
FROM generate_series(1, :events, :chunk) lo
\gexec
