-- The subscriptions a batch refers to ($1: its distinct external ids), from the directory:
-- the customer's time zone and the instants between which each accepts events.
SELECT d.external_id, d.subscription_id, d.customer_id, d.plan_version_ids, d.timezone, d.active_from, d.active_until, d.realtime
FROM unnest($1::text[]) AS wanted(external_id) JOIN billing.subscription_directory d USING (external_id)
