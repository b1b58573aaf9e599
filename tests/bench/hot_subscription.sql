-- A subscription with :events events in the open period, loaded in bulk (events and their
-- day rollups), for the current-usage measures: psql -v label=... -v events=...
SELECT billing.create_customer(:'label', 'Hot', 'USD', 'UTC') IS NOT NULL;
SELECT billing.create_subscription(:'label', :'label', 'api', date_trunc('month', now())) IS NOT NULL;
INSERT INTO billing.events (customer_id, subscription_id, transaction_id, billable_metric_id, "timestamp", local_day, properties, value, dims)
SELECT s.customer_id, s.id, 'hot-' || k, m.id, t, t::date, jsonb_build_object('tokens', k % 100), k % 100, '{}'
FROM billing.subscriptions s, billing.billable_metrics m, generate_series(1, :events) k,
     LATERAL (SELECT date_trunc('month', now()) + (k % (extract(epoch FROM now() - date_trunc('month', now()))::bigint)) * interval '1 second') ts(t)
WHERE s.external_id = :'label' AND m.code = 'tokens';
INSERT INTO billing.usage_rollups
SELECT e.customer_id, e.subscription_id, e.billable_metric_id, e.local_day, e.dims, (e.id % 8)::smallint,
       count(*), sum(e.value), max(e.value), max(e."timestamp"),
       (array_agg(e.id ORDER BY e."timestamp" DESC, e.id DESC))[1], (array_agg(e.value ORDER BY e."timestamp" DESC, e.id DESC))[1]
FROM billing.events e JOIN billing.subscriptions s ON s.id = e.subscription_id WHERE s.external_id = :'label'
GROUP BY 1, 2, 3, 4, 5, 6;
