-- The subscriptions a batch refers to ($1: distinct external ids), with their customer's
-- time zone and the instants (microseconds since 2000-01-01 UTC) between which they accept
-- events: from the start (a pending subscription is active from its subscription_at on,
-- whether or not billing.activate_subscriptions() has flipped its status yet) to the
-- termination. Joined from the ids so each is one index probe, whatever the table's size.
SELECT s.external_id, s.id, s.customer_id, s.plan_version_id, c.timezone,
       (extract(epoch FROM coalesce(s.started_at, s.subscription_at) - '2000-01-01 UTC'::timestamptz) * 1000000)::bigint,
       (extract(epoch FROM s.terminated_at - '2000-01-01 UTC'::timestamptz) * 1000000)::bigint
FROM unnest($1::text[]) AS wanted(external_id)
JOIN billing.subscriptions s ON s.external_id = wanted.external_id
JOIN billing.customers c ON c.id = s.customer_id
