-- The subscriptions a batch refers to ($1: its distinct external ids), from the directory:
-- the customer's time zone and the instants (microseconds since 2000-01-01 UTC) between
-- which each accepts events.
SELECT d.external_id, d.subscription_id, d.customer_id, d.plan_version_id, d.timezone,
       (extract(epoch FROM d.active_from - '2000-01-01 UTC'::timestamptz) * 1000000)::bigint,
       (extract(epoch FROM d.active_until - '2000-01-01 UTC'::timestamptz) * 1000000)::bigint
FROM unnest($1::text[]) AS wanted(external_id) JOIN billing.subscription_directory d USING (external_id)
