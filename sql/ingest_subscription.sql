-- The one subscription a single event refers to ($1[1]): a direct index probe, where the
-- generic plan of the batch form would scan every subscription to match one id.
SELECT d.external_id, d.subscription_id, d.customer_id, d.plan_version_ids, d.timezone, d.active_from, d.active_until, d.realtime
FROM billing.subscription_directory d WHERE d.external_id = ($1::text[])[1]
