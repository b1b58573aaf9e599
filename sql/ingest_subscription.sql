-- The one subscription a single event refers to ($1[1]): a direct index probe, where the
-- generic plan of the batch form would scan every subscription to match one id.
SELECT d.external_id, d.subscription_id, d.customer_id, d.plan_version_id, d.timezone,
       (extract(epoch FROM d.active_from - '2000-01-01 UTC'::timestamptz) * 1000000)::bigint,
       (extract(epoch FROM d.active_until - '2000-01-01 UTC'::timestamptz) * 1000000)::bigint
FROM billing.subscription_directory d WHERE d.external_id = ($1::text[])[1]
